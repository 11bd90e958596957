"""Audit trail: JSON lines with the fields, rotation, a full queue that drops instead of blocking, no secrets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import stat
import timeit
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.policy.audit import (
    AuditRecord,
    AuditTrail,
    FileSink,
    OtelLogSink,
    StdoutSink,
    arguments_sha256,
    audit_sinks,
    changed_fields,
    credential_failed,
    credential_used,
    iter_records,
    parse_audit_setting,
)


class ListSink:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.closed = False

    async def write(self, records: Sequence[AuditRecord]) -> None:
        self.records.extend(records)

    async def close(self) -> None:
        self.closed = True


class StuckSink:
    """A sink whose write never finishes (a stalled collector)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def write(self, records: Sequence[AuditRecord]) -> None:
        await self.release.wait()

    async def close(self) -> None:
        pass


class BrokenSink:
    async def write(self, records: Sequence[AuditRecord]) -> None:
        raise OSError("disk full")

    async def close(self) -> None:
        pass


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


async def test_file_sink_writes_json_lines_with_the_fields(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail([FileSink(path)])
    await trail.start()
    common: dict[str, Any] = {"user": "alice", "roles": frozenset({"calc.user", "b"}), "adapter": "calc"}
    trail.record(
        "tools/call",
        "allowed",
        target="add",
        status=200,
        latency_ms=1.23456,
        request_id="req-1",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        rpc_id=7,
        era="modern",
        **common,
    )
    trail.record("tools/call", "denied", target="secret", status=403, detail="tool policy", **common)
    trail.record("tools/call", "limited", target="add", status=429, limit="rateLimits[0]", **common)
    trail.record("resources/read", "upstream_error", target="file:///a", status=502, **common)
    trail.record("prompts/get", "error", target="greet", status=504, **common)
    trail.record("session.start", "allowed", status=200, **common)
    trail.record("session.end", "allowed", **common)
    await trail.close()

    got = lines(path)
    assert [(g["event"], g["outcome"]) for g in got] == [
        ("tools/call", "allowed"),
        ("tools/call", "denied"),
        ("tools/call", "limited"),
        ("resources/read", "upstream_error"),
        ("prompts/get", "error"),
        ("session.start", "allowed"),
        ("session.end", "allowed"),
    ]
    first = got[0]
    assert first["time"].endswith("Z") and first["user"] == "alice" and first["roles"] == ["b", "calc.user"]
    assert (first["adapter"], first["tool"], first["status"], first["latency_ms"]) == ("calc", "add", 200, 1.235)
    assert (first["request_id"], first["trace_id"], first["rpc_id"], first["era"]) == (
        "req-1",
        "0af7651916cd43dd8448eb211c80319c",
        7,
        "modern",
    )
    assert got[2]["limit"] == "rateLimits[0]" and got[3]["resource"] == "file:///a" and got[4]["prompt"] == "greet"
    assert "tool" not in got[5] and "arguments_sha256" not in first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert trail.written == 7 and trail.dropped == 0 and len(iter_records(path.read_bytes().splitlines())) == 7


async def test_existing_audit_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    path.chmod(0o644)
    trail = AuditTrail([FileSink(path)])
    await trail.start()
    trail.record("session.start", "allowed", user="u")
    await trail.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(lines(path)) == 1


async def test_file_rotates_by_size_and_keeps_the_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail([FileSink(path, max_bytes=2048, backups=2)])
    await trail.start()
    for i in range(60):
        trail.record("tools/call", "allowed", user="u", adapter="calc", target=f"tool-{i:03}")
        await trail.flush()  # one write per record: rotation happens between records
    await trail.close()
    files = sorted(os.listdir(tmp_path))
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 2048
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    newest, older = lines(path), lines(tmp_path / "audit.jsonl.1")
    assert newest[-1]["tool"] == "tool-059" and older[-1]["tool"] < newest[0]["tool"]
    kept = [g["tool"] for name in reversed(files) for g in lines(tmp_path / name)]
    assert kept == sorted(kept) and kept[-1] == "tool-059"  # in order, nothing lost but the oldest


async def test_full_queue_drops_and_counts_instead_of_blocking() -> None:
    stuck = StuckSink()
    trail = AuditTrail([stuck], queue_size=100)
    await trail.start()
    trail.record("tools/call", "allowed", user="u", target="add")
    await asyncio.sleep(0.01)  # the writer takes the first record and hangs in the sink
    for _ in range(1000):
        trail.record("tools/call", "allowed", user="u", target="add")
    assert trail.queued == 100 and trail.dropped == 900

    def one() -> None:
        trail.record("tools/call", "allowed", user="alice", roles=frozenset({"r"}), adapter="calc", target="add")

    n = 20_000
    full = timeit.timeit(one, number=n) / n * 1e6
    stuck.release.set()
    await trail.flush()
    room = AuditTrail([ListSink()], queue_size=n + 1)
    await room.start()

    def one_with_room() -> None:
        room.record("tools/call", "allowed", user="alice", roles=frozenset({"r"}), adapter="calc", target="add")

    spare = timeit.timeit(one_with_room, number=n) / n * 1e6
    await room.close()
    await trail.close()
    print(f"\naudit record(): {spare:.2f} µs per call with room in the queue, {full:.2f} µs when full (dropped)")
    assert trail.dropped == 900 + n
    assert spare < 20 and full < 20  # generous bounds for a loaded machine; the print shows the real figure


async def test_off_means_no_sink_and_record_does_nothing() -> None:
    assert parse_audit_setting("off") is None and parse_audit_setting("") is None
    trail = AuditTrail([])
    trail.record("tools/call", "allowed", user="u")
    assert not trail.enabled and trail.queued == 0 and trail.dropped == 0


def test_audit_setting_forms(tmp_path: Path) -> None:
    assert isinstance(parse_audit_setting("stdout"), StdoutSink)
    sink = parse_audit_setting(f"file:{tmp_path}/a.jsonl")
    assert isinstance(sink, FileSink) and sink.path == tmp_path / "a.jsonl"
    for bad in ("file:", "syslog", "file"):
        with pytest.raises(ValueError, match="MCPGW_AUDIT must be off, stdout or file:PATH"):
            parse_audit_setting(bad)


async def test_stdout_sink_writes_lines(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    trail = AuditTrail(audit_sinks("stdout"))
    await trail.start()
    trail.record("session.end", "allowed", user="u", adapter="calc")
    await trail.close()
    out = capfdbinary.readouterr().out
    assert json.loads(out)["event"] == "session.end"


# --- what is never recorded ------------------------------------------------------------------------

SECRET = "s3cr3t-value-9f8e7d"


async def test_control_plane_record_names_changed_fields_never_env_values(tmp_path: Path) -> None:
    before = {
        "name": "calc",
        "imageName": "mcp-example",
        "imageVersion": "1.0.0",
        "environmentVariables": {"API_KEY": "old-" + SECRET, "REGION": "eu", "GONE": "x" + SECRET},
        "replicaCount": 1,
        "etag": '"1"',
        "generation": 1,
    }
    after = before | {
        "environmentVariables": {"API_KEY": SECRET, "REGION": "eu", "NEW_TOKEN": SECRET},
        "replicaCount": 2,
        "etag": '"2"',
        "generation": 2,
    }
    changed = changed_fields(before, after)
    assert changed == [
        "environmentVariables.API_KEY",
        "environmentVariables.GONE",
        "environmentVariables.NEW_TOKEN",
        "replicaCount",
    ]
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail([FileSink(path)])
    await trail.start()
    trail.record("adapter.update", "allowed", user="admin", adapter="calc", status=200, changed=changed)
    trail.record(
        "adapter.create", "allowed", user="admin", adapter="calc", status=201, changed=changed_fields(None, after)
    )
    trail.record(
        "adapter.delete", "allowed", user="admin", adapter="calc", status=204, changed=changed_fields(after, None)
    )
    await trail.close()
    text = path.read_text()
    assert SECRET not in text and "eu" not in text.replace('"', " ").split()
    got = lines(path)
    assert got[0]["changed"] == changed
    assert "environmentVariables.NEW_TOKEN" in got[1]["changed"] and "etag" not in got[1]["changed"]
    assert got[2]["changed"] == []


async def test_arguments_only_as_a_hash_and_only_when_asked(tmp_path: Path) -> None:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "add", "arguments": {"b": SECRET, "a": 1}},
        }
    ).encode()
    canonical = json.dumps({"a": 1, "b": SECRET}, separators=(",", ":"), sort_keys=True).encode()
    assert arguments_sha256({"b": SECRET, "a": 1}) == hashlib.sha256(canonical).hexdigest()

    off, on = ListSink(), ListSink()
    for sink, hashing in ((off, False), (on, True)):
        trail = AuditTrail([sink], hash_arguments=hashing)
        await trail.start()
        trail.record("tools/call", "allowed", user="u", target="add", rpc_id=3, body=body)
        batch = b"[" + body + b"," + body.replace(b'"id": 3', b'"id": 4').replace(b'"a": 1', b'"a": 2') + b"]"
        trail.record("tools/call", "allowed", user="u", target="add", rpc_id=4, body=batch)
        await trail.close()
    assert off.records[0].arguments_sha256 is None and SECRET not in repr(off.records)
    assert on.records[0].arguments_sha256 == hashlib.sha256(canonical).hexdigest()
    assert on.records[1].arguments_sha256 == arguments_sha256({"a": 2, "b": SECRET})
    assert SECRET not in repr(on.records)


# --- sinks that fail, OpenTelemetry, shutdown ------------------------------------------------------


async def test_failing_sink_is_counted_logged_once_and_others_still_get_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = ListSink()
    trail = AuditTrail([BrokenSink(), good])
    await trail.start()
    caplog.set_level(logging.ERROR, logger="gateway.policy.audit")
    for _ in range(3):
        trail.record("tools/call", "allowed", user="u")
        await trail.flush()
    await trail.close()
    assert trail.failed == 3 and trail.written == 0 and len(good.records) == 3 and good.closed
    assert len([r for r in caplog.records if "disk full" in r.getMessage()]) == 1


async def test_close_writes_what_is_queued() -> None:
    sink = ListSink()
    trail = AuditTrail([sink])
    await trail.start()
    for i in range(1500):
        trail.record("tools/call", "allowed", user="u", target=str(i))
    await trail.close()
    assert len(sink.records) == 1500 and trail.dropped == 0


async def test_close_gives_up_on_a_stuck_sink_and_counts_the_rest() -> None:
    trail = AuditTrail([StuckSink()], close_timeout=0.2)
    await trail.start()
    trail.record("tools/call", "allowed", user="u")
    await asyncio.sleep(0.01)
    trail.record("tools/call", "allowed", user="u")
    await trail.close()
    assert trail.dropped == 1


async def test_opentelemetry_logs_sink() -> None:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]  # the OTel SDK leaves it unannotated
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    sinks = audit_sinks("off", logger_provider=provider)
    assert [type(s) for s in sinks] == [OtelLogSink]
    trail = AuditTrail(sinks)
    await trail.start()
    trail.record("tools/call", "denied", user="alice", adapter="calc", target="secret", status=403, request_id="r1")
    await trail.close()
    provider.shutdown()
    (exported,) = exporter.get_finished_logs()
    rec = exported.log_record
    assert rec.event_name == "mcp.gateway.audit"
    assert isinstance(rec.body, dict) and rec.body["tool"] == "secret" and rec.body["outcome"] == "denied"
    assert rec.attributes is not None
    assert rec.attributes["mcp.audit.outcome"] == "denied" and rec.attributes["mcp.audit.tool"] == "secret"
    assert rec.attributes["mcp.audit.status"] == 403 and rec.timestamp is not None and rec.timestamp > 0


def test_file_sink_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1024"):
        FileSink(tmp_path / "a", max_bytes=10)
    assert not os.path.exists(tmp_path / "a")


async def test_a_record_that_cannot_be_built_is_counted_and_the_writer_goes_on() -> None:
    sink = ListSink()
    trail = AuditTrail([sink])
    await trail.start()
    trail.record("tools/call", "allowed", user="u", roles=[1, "a"])  # type: ignore[list-item]  # unsortable
    trail.record("tools/call", "allowed", user="u", target="after")
    await trail.close()
    assert trail.failed == 1 and [r.tool for r in sink.records] == ["after"]


async def test_credential_use_is_recorded_as_kind_and_outcome_in_every_sink(tmp_path: Path) -> None:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]  # the OTel SDK leaves it unannotated
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail([FileSink(path), *audit_sinks("off", logger_provider=provider)])
    await trail.start()
    cached = credential_used("entra-obo", False)
    assert credential_used("entra-obo", False) is cached  # shared: nothing allocated per request
    trail.record("tools/call", "allowed", user="alice", adapter="graph", target="me", status=200, credential=cached)
    failed = credential_failed("secret", -32010, "unavailable")
    trail.record("upstream.credential", "error", user="bob", adapter="keyed", status=502, credential=failed)
    trail.record("tools/call", "allowed", user="carol", adapter="plain", target="add", status=200)
    await trail.close()
    provider.shutdown()
    written = lines(path)
    assert written[0]["credential"] == {"type": "entra-obo", "outcome": "cached"}
    assert written[1]["event"] == "upstream.credential"
    assert written[1]["credential"] == {"type": "secret", "outcome": "failed", "code": -32010, "reason": "unavailable"}
    assert "credential" not in written[2]
    assert iter_records(path.read_bytes().splitlines())[1].credential == failed
    exported = [e.log_record for e in exporter.get_finished_logs()]
    assert exported[0].attributes is not None and exported[1].attributes is not None
    assert exported[0].attributes["mcp.audit.credential.type"] == "entra-obo"
    assert exported[1].attributes["mcp.audit.credential.outcome"] == "failed"
