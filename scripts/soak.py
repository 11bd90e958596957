"""Soak: does a gateway under mixed traffic and replica churn keep its memory and fds flat?

Usage (from the repository root, with the project's virtualenv)::

    python scripts/soak.py                       # 12 minutes, memory sessions
    python scripts/soak.py --sessions redis      # 12 minutes, Redis sessions (starts a redis-server)
    python scripts/soak.py --minutes 0.5         # a smoke run
    python scripts/soak.py --json result.json    # also write the result there

It starts, on free loopback ports, a gateway (``python -m gateway.cli serve``, embedded mode with
the example adapter ``mcp-example``, two replicas) and, with ``--sessions redis``, a
``redis-server``; then, for ``--minutes``:

* stateless 2026-07-28 ``tools/call`` requests;
* 2025-era sessions: ``initialize``, ``notifications/initialized``, three calls, then ``DELETE``
  (one session in five is abandoned without it);
* legacy HTTP+SSE sessions (``GET /sse``, ``POST /messages``, answers read from the stream);
* 50 idle streams (a session's ``GET /mcp`` stream, held open; reopened when a replica dies);
* every minute a rollout (``PUT`` of ``mcp-example`` with a new environment variable) and a
  throwaway adapter (created, called once, deleted);
* every 90 seconds one replica of ``mcp-example`` killed with SIGKILL.

Every few seconds it samples the gateway process's RSS and open fds. At the end it stops the
traffic, waits for idle connections to expire, and prints one JSON object: the RSS slope after
the warm-up (least squares, MiB per minute), fds before the traffic and after it, each kill,
rollout and throwaway with the seconds it took to recover, and request counts. It exits 1 when
the slope is over ``--max-slope``, fds did not come back, something did not recover, or the
traffic mostly failed; 2 when the set-up failed.

Session records live ``--session-ttl`` seconds (default 120, shorter than the warm-up) so the
abandoned sessions reach their steady state before the slope is measured.
``--gateway-repo`` runs the gateway from another checkout (to measure an older version).
``--churn-every SECONDS`` packs the rollouts and throwaways closer (a kill every 1.5 times that),
to show in minutes what churn does in hours. ``--series`` keeps every sample: RSS, fds, threads,
and anonymous vs file-backed RSS with the line count of ``/metrics``. ``--gateway-env NAME=VALUE``
and ``--malloc-trim SECONDS`` are for diagnosis (allocator settings; glibc ``malloc_trim(0)``).
``--tracemalloc FILE`` runs the gateway under ``tracemalloc`` and writes to FILE, every minute,
the source lines whose allocations grew most since the end of the warm-up (to find a leak; the
gateway is slower then, so the slope of such a run is not the one to report).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
ADAPTER = "mcp-example"
MODERN = "2026-07-28"
SESSION_ERA = "2025-11-25"
LEGACY = "2024-11-05"
ACCEPT = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "soak", "version": "1"},
}
CLIENT = {"name": "soak", "version": "1"}
IDLE_STREAMS = 50
SAMPLE_EVERY = 3.0
RECOVERY_TIMEOUT = 90.0
QUIET_SECONDS = 8.0
"""After the traffic stops: longer than the upstream pool's idle keep-alive (4 s)."""
USERS = 200


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def thread_count(pid: int) -> int:
    """Threads of ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def smaps_mib(pid: int) -> tuple[float, float]:
    """Anonymous and file-backed resident memory of ``pid`` in MiB (from /proc/<pid>/smaps_rollup)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            fields[name] = int(rest.split()[0])
    anon = fields.get("Anonymous", 0)
    return anon / 1024, (fields.get("Rss", 0) - anon) / 1024


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def sockets_to_port(pid: int, port: int) -> int:
    """Open TCP connections of ``pid`` whose remote port is ``port`` (from /proc/<pid>/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    count += 1
    return count


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def replica_pids(gateway_pid: int, adapter: str) -> list[int]:
    """Replica processes of ``adapter`` under the gateway (by their MCP_REPLICA_ID, whatever wraps them)."""
    pids = []
    prefix = f"MCP_REPLICA_ID={adapter}-".encode()
    for pid in descendants(gateway_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"server.py" in cmdline and b"bwrap" not in cmdline and any(e.startswith(prefix) for e in environ):
            pids.append(pid)
    return pids


@dataclass
class Stats:
    """What happened during the run."""

    requests: Counter[str] = field(default_factory=Counter)
    samples: list[tuple[float, float, int, int]] = field(default_factory=list)
    memory: list[tuple[float, float, float, int]] = field(default_factory=list)
    """(seconds, anonymous MiB, file-backed MiB, lines of ``/metrics``) per sample."""
    events: list[dict[str, Any]] = field(default_factory=list)
    open_streams: int = 0

    def count(self, kind: str, ok: bool) -> None:
        self.requests[f"{kind}_{'ok' if ok else 'failed'}"] += 1


class Soak:
    """One soak run against one gateway."""

    def __init__(self, args: argparse.Namespace, url: str, gateway_pid: int, redis_port: int = 0) -> None:
        self.args = args
        self.redis_port = redis_port
        self.url = url
        self.pid = gateway_pid
        self.stats = Stats()
        self.started = time.monotonic()
        self.stop = asyncio.Event()
        self.generation = 0

    def headers(self, user: str | None = None) -> dict[str, str]:
        """Dev-auth identity of a soak user (mcp.admin: may use every adapter)."""
        return {"X-Dev-User-Id": user or f"soak-{random.randrange(USERS)}", "X-Dev-Roles": "mcp.admin"}

    # --- traffic -------------------------------------------------------------------------------

    async def stateless(self, client: httpx.AsyncClient, adapter: str = ADAPTER) -> bool:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "soak"}, "_meta": META},
        }
        headers = {
            **ACCEPT,
            **self.headers(),
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": "tools/call",
            "Mcp-Name": "echo",
        }
        try:
            r = await client.post(f"{self.url}/adapters/{adapter}/mcp", json=body, headers=headers)
            ok = r.status_code == 200 and "soak" in r.text
        except httpx.HTTPError:
            ok = False
        self.stats.count("stateless", ok)
        return ok

    async def open_session(self, client: httpx.AsyncClient, user: str) -> str | None:
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": SESSION_ERA,
                "capabilities": {},
                "clientInfo": {"name": "soak", "version": "1"},
            },
        }
        url = f"{self.url}/adapters/{ADAPTER}/mcp"
        try:
            r = await client.post(url, json=init, headers={**ACCEPT, **self.headers(user)})
            sid = r.headers.get("mcp-session-id")
            if r.status_code != 200 or not sid:
                self.stats.count("initialize", False)
                return None
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            headers = {**ACCEPT, **self.headers(user), "Mcp-Session-Id": sid, "MCP-Protocol-Version": SESSION_ERA}
            r = await client.post(url, json=note, headers=headers)
            ok = r.status_code == 202
        except httpx.HTTPError:
            ok, sid = False, None
        self.stats.count("initialize", ok)
        return sid if ok else None

    async def session_loop(self, client: httpx.AsyncClient) -> None:
        url = f"{self.url}/adapters/{ADAPTER}/mcp"
        while not self.stop.is_set():
            user = f"soak-{random.randrange(USERS)}"
            sid = await self.open_session(client, user)
            if sid is not None:
                headers = {**ACCEPT, **self.headers(user), "Mcp-Session-Id": sid, "MCP-Protocol-Version": SESSION_ERA}
                for i in range(3):
                    body = {
                        "jsonrpc": "2.0",
                        "id": i + 1,
                        "method": "tools/call",
                        "params": {"name": "add", "arguments": {"a": i, "b": 1}},
                    }
                    try:
                        r = await client.post(url, json=body, headers=headers)
                        self.stats.count("session_call", r.status_code == 200)
                    except httpx.HTTPError:
                        self.stats.count("session_call", False)
                if random.random() < 0.8:
                    with contextlib.suppress(httpx.HTTPError):
                        r = await client.delete(url, headers=headers)
                        self.stats.count("delete", r.status_code in (200, 204, 404, 405))
                else:
                    self.stats.requests["abandoned"] += 1
            await self.pause(0.2)

    async def stateless_loop(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            await self.stateless(client)
            await self.pause(0.05)

    async def legacy_loop(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            ok = False
            with contextlib.suppress(httpx.HTTPError, TimeoutError, ValueError):
                async with asyncio.timeout(20):
                    ok = await self.legacy_session(client)
            self.stats.count("legacy_sse", ok)
            await self.pause(0.5)

    async def legacy_session(self, client: httpx.AsyncClient) -> bool:
        user = f"soak-{random.randrange(USERS)}"
        headers = {**self.headers(user), "Accept": "text/event-stream"}
        async with client.stream("GET", f"{self.url}/adapters/{ADAPTER}/sse", headers=headers) as stream:
            if stream.status_code != 200:
                return False
            lines = stream.aiter_lines()
            endpoint = ""
            async for line in lines:
                if line.startswith("data:") and not endpoint:
                    endpoint = line[5:].strip()
                    break
            if "/messages" not in endpoint:
                return False
            post_url = endpoint if endpoint.startswith("http") else self.url + endpoint
            post_headers = {**self.headers(user), "Content-Type": "application/json"}
            messages: list[dict[str, Any]] = [
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": LEGACY,
                        "capabilities": {},
                        "clientInfo": {"name": "s", "version": "1"},
                    },
                },
                {"jsonrpc": "2.0", "method": "notifications/initialized"},
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "x"}},
                },
            ]
            answered: set[int] = set()
            for message in messages:
                r = await client.post(post_url, json=message, headers=post_headers)
                if r.status_code not in (200, 202):
                    return False
                if "id" not in message:
                    continue
                async for line in lines:
                    if line.startswith("data:"):
                        data = json.loads(line[5:])
                        if isinstance(data, dict) and data.get("id") == message["id"]:
                            answered.add(int(message["id"]))
                            break
            return answered == {1, 2}

    async def idle_stream(self, client: httpx.AsyncClient, index: int) -> None:
        user = f"soak-idle-{index}"
        url = f"{self.url}/adapters/{ADAPTER}/mcp"
        while not self.stop.is_set():
            sid = await self.open_session(client, user)
            if sid is None:
                await self.pause(1.0)
                continue
            headers = {
                **self.headers(user),
                "Accept": "text/event-stream",
                "Mcp-Session-Id": sid,
                "MCP-Protocol-Version": SESSION_ERA,
            }
            with contextlib.suppress(httpx.HTTPError):
                async with client.stream("GET", url, headers=headers) as stream:
                    if stream.status_code == 200:
                        self.stats.open_streams += 1
                        try:
                            reader = asyncio.ensure_future(self._drain(stream))
                            stopper = asyncio.ensure_future(self.stop.wait())
                            await asyncio.wait([reader, stopper], return_when=asyncio.FIRST_COMPLETED)
                            for task in (reader, stopper):
                                task.cancel()
                        finally:
                            self.stats.open_streams -= 1
                        self.stats.requests["idle_stream_ended"] += 1
            with contextlib.suppress(httpx.HTTPError):
                await client.delete(url, headers={**self.headers(user), "Mcp-Session-Id": sid})
            await self.pause(1.0)

    @staticmethod
    async def _drain(stream: httpx.Response) -> None:
        async for _ in stream.aiter_raw():
            pass

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    # --- churn ---------------------------------------------------------------------------------

    async def ready(self, api: httpx.AsyncClient, name: str, replicas: int) -> bool:
        r = await api.get(f"/adapters/{name}/status")
        if r.status_code != 200:
            return False
        s = r.json()
        return bool(
            s["observedGeneration"] == s["generation"]
            and s["readyReplicas"] == replicas
            and s["updatedReplicas"] >= replicas
        )

    async def wait_recovered(
        self, api: httpx.AsyncClient, client: httpx.AsyncClient, name: str, replicas: int
    ) -> float:
        """Seconds until the adapter is ready again and answers; -1 when it did not within the timeout."""
        start = time.monotonic()
        while time.monotonic() - start < RECOVERY_TIMEOUT:
            with contextlib.suppress(httpx.HTTPError):
                if await self.ready(api, name, replicas) and await self.stateless(client, name):
                    return round(time.monotonic() - start, 2)
            await asyncio.sleep(0.5)
        return -1.0

    async def event(self, kind: str, action: Any) -> None:
        at = round(time.monotonic() - self.started, 1)
        try:
            detail = await action
        except Exception as exc:  # reported, the run goes on
            detail = {"recovered_s": -1.0, "error": f"{type(exc).__name__}: {exc}"}
        self.stats.events.append({"kind": kind, "at_s": at, **detail})

    async def rollout(self, api: httpx.AsyncClient, client: httpx.AsyncClient) -> dict[str, Any]:
        self.generation += 1
        body = {
            "name": ADAPTER,
            "imageName": "mcp-example",
            "imageVersion": "1.0.0",
            "replicaCount": 2,
            "environmentVariables": {"SOAK_ROLLOUT": str(self.generation)},
        }
        before = set(replica_pids(self.pid, ADAPTER))
        start = time.monotonic()
        r = await api.put(f"/adapters/{ADAPTER}", json=body)
        if r.status_code != 200:
            return {"recovered_s": -1.0, "error": f"PUT answered {r.status_code}: {r.text[:200]}"}
        # Rolled: none of the replicas that ran before the PUT is left, and the new ones answer.
        while time.monotonic() - start < RECOVERY_TIMEOUT:
            if not before & set(replica_pids(self.pid, ADAPTER)):
                took = await self.wait_recovered(api, client, ADAPTER, 2)
                return {"recovered_s": took if took < 0 else round(time.monotonic() - start, 2)}
            await asyncio.sleep(0.5)
        return {"recovered_s": -1.0, "error": "old replicas still running"}

    async def throwaway(self, api: httpx.AsyncClient, client: httpx.AsyncClient, n: int) -> dict[str, Any]:
        name = f"soak-tmp-{n}"
        body = {"name": name, "imageName": "mcp-example", "imageVersion": "1.0.0", "replicaCount": 1}
        r = await api.post("/adapters", json=body)
        if r.status_code != 201:
            return {"recovered_s": -1.0, "error": f"POST answered {r.status_code}: {r.text[:200]}"}
        took = await self.wait_recovered(api, client, name, 1)
        r = await api.delete(f"/adapters/{name}")
        if r.status_code != 204:
            return {"recovered_s": -1.0, "error": f"DELETE answered {r.status_code}"}
        return {"recovered_s": took}

    async def kill(self, api: httpx.AsyncClient, client: httpx.AsyncClient) -> dict[str, Any]:
        pids = replica_pids(self.pid, ADAPTER)
        if not pids:
            return {"recovered_s": -1.0, "error": "no replica process found"}
        victim = random.choice(pids)
        os.kill(victim, signal.SIGKILL)
        await asyncio.sleep(1.0)  # let the runtime notice before asking whether it is ready
        took = await self.wait_recovered(api, client, ADAPTER, 2)
        return {"recovered_s": took if took < 0 else round(took + 1.0, 2), "pid": victim}

    async def churn(self, api: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
        pending: set[asyncio.Task[None]] = set()
        n = 0
        every = self.args.churn_every
        next_minute, next_kill = every, every * 1.5
        if self.args.minutes < 1.5:  # a smoke run: one of each, early
            next_minute, next_kill = self.args.minutes * 60 * 0.2, self.args.minutes * 60 * 0.4
        while not self.stop.is_set():
            elapsed = time.monotonic() - self.started
            if elapsed >= next_minute:
                n += 1
                pending.add(asyncio.create_task(self.event("rollout", self.rollout(api, client))))
                pending.add(asyncio.create_task(self.event("throwaway", self.throwaway(api, client, n))))
                next_minute += every
            if elapsed >= next_kill:
                pending.add(asyncio.create_task(self.event("kill", self.kill(api, client))))
                next_kill += every * 1.5
            await self.pause(0.5)
        if pending:  # let the last events finish recovering (bounded by their own timeout)
            await asyncio.wait(pending)

    # --- sampling ------------------------------------------------------------------------------

    async def sample_loop(self, api: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError):
                t = time.monotonic() - self.started
                self.stats.samples.append((t, rss_mib(self.pid), fd_count(self.pid), thread_count(self.pid)))
                anon, file = smaps_mib(self.pid)
                lines = -1
                with contextlib.suppress(httpx.HTTPError):
                    r = await api.get("/metrics")
                    lines = r.text.count("\n") if r.status_code == 200 else -1
                self.stats.memory.append((t, anon, file, lines))
            await self.pause(SAMPLE_EVERY)

    # --- the run -------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        timeout = httpx.Timeout(30.0)
        async with (
            httpx.AsyncClient(base_url=self.url, headers={"X-Dev-User-Id": "dev"}, timeout=timeout) as api,
            httpx.AsyncClient(limits=limits, timeout=timeout) as client,
            httpx.AsyncClient(limits=httpx.Limits(max_connections=IDLE_STREAMS * 2), timeout=None) as streams,
        ):
            fds_before = fd_count(self.pid)
            redis_before = self.redis_connections()
            rss_before = rss_mib(self.pid)
            tasks = [
                asyncio.create_task(self.sample_loop(api)),
                asyncio.create_task(self.churn(api, client)),
                *(asyncio.create_task(self.stateless_loop(client)) for _ in range(2)),
                *(asyncio.create_task(self.session_loop(client)) for _ in range(2)),
                asyncio.create_task(self.legacy_loop(client)),
                *(asyncio.create_task(self.idle_stream(streams, i)) for i in range(IDLE_STREAMS)),
            ]
            await asyncio.sleep(self.args.minutes * 60)
            self.stop.set()
            await asyncio.wait(tasks, timeout=RECOVERY_TIMEOUT + 30)
            for task in tasks:
                task.cancel()
        await asyncio.sleep(QUIET_SECONDS)
        # One request on each pooled target lets the pool close what idled past its keep-alive.
        async with httpx.AsyncClient(timeout=10) as client:
            await self.stateless(client)
        await asyncio.sleep(1.0)
        redis = (redis_before, self.redis_connections())
        return self.report(fds_before, rss_before, fd_count(self.pid), rss_mib(self.pid), redis)

    def redis_connections(self) -> int:
        return sockets_to_port(self.pid, self.redis_port) if self.redis_port else 0

    def report(
        self, fds_before: int, rss_before: float, fds_after: int, rss_after: float, redis: tuple[int, int]
    ) -> dict[str, Any]:
        minutes = self.args.minutes
        warmup = self.args.warmup if self.args.warmup is not None else min(3.0, minutes / 4)
        steady = [(t, rss) for t, rss, _, _ in self.stats.samples if t >= warmup * 60]
        slope = slope_per_minute(steady)
        requests = dict(sorted(self.stats.requests.items()))
        stateless_ok = requests.get("stateless_ok", 0)
        stateless_all = stateless_ok + requests.get("stateless_failed", 0)
        failures = []
        if slope > self.args.max_slope:
            failures.append(f"RSS grows {slope:.3f} MiB/min after warm-up (limit {self.args.max_slope})")
        # Redis connections stay pooled (at most the store's POOL_SIZE, 64); every other fd must go.
        others_before, others_after = fds_before - redis[0], fds_after - redis[1]
        if others_after > others_before + self.args.fd_slack:
            failures.append(
                f"{others_after} fds (Redis connections left out) after the run, {others_before} before "
                f"(slack {self.args.fd_slack})"
            )
        if redis[1] > 64:
            failures.append(f"{redis[1]} connections to Redis after the run (pool size 64)")
        for event in self.stats.events:
            if event["recovered_s"] < 0:
                failures.append(
                    f"{event['kind']} at {event['at_s']} s did not recover: {event.get('error', 'timeout')}"
                )
        if stateless_all == 0 or stateless_ok / stateless_all < 0.95:
            failures.append(f"only {stateless_ok} of {stateless_all} stateless calls succeeded")
        for kind in ("initialize_ok", "session_call_ok", "legacy_sse_ok"):
            if not requests.get(kind):
                failures.append(f"no {kind.removesuffix('_ok')} succeeded")
        kinds = Counter(e["kind"] for e in self.stats.events)
        return {
            "sessions": self.args.sessions,
            "minutes": minutes,
            "warmup_minutes": warmup,
            "samples": len(self.stats.samples),
            "rss_before_mib": round(rss_before, 1),
            "rss_after_warmup_mib": round(steady[0][1], 1) if steady else None,
            "rss_end_mib": round(rss_after, 1),
            "rss_max_mib": round(max((s[1] for s in self.stats.samples), default=0.0), 1),
            "rss_slope_mib_per_min": round(slope, 4),
            "fds_before": fds_before,
            "fds_max": max((s[2] for s in self.stats.samples), default=0),
            "fds_after": fds_after,
            "redis_connections_before": redis[0],
            "redis_connections_after": redis[1],
            "events": dict(kinds),
            "events_recovered": sum(1 for e in self.stats.events if e["recovered_s"] >= 0),
            "recovery_max_s": max((e["recovered_s"] for e in self.stats.events), default=0.0),
            "event_log": self.stats.events,
            "requests": requests,
            "threads_after_warmup": next((n for t, _, _, n in self.stats.samples if t >= warmup * 60), 0),
            "threads_max": max((s[3] for s in self.stats.samples), default=0),
            "rss_series": [[round(t, 1), round(r, 2), f, n] for t, r, f, n in self.stats.samples],
            "anon_slope_mib_per_min": round(
                slope_per_minute([(t, a) for t, a, _, _ in self.stats.memory if t >= warmup * 60]), 4
            ),
            "file_slope_mib_per_min": round(
                slope_per_minute([(t, f) for t, _, f, _ in self.stats.memory if t >= warmup * 60]), 4
            ),
            "metrics_lines_after_warmup": next((n for t, _, _, n in self.stats.memory if t >= warmup * 60), 0),
            "metrics_lines_end": self.stats.memory[-1][3] if self.stats.memory else 0,
            "memory_series": [[round(t, 1), round(a, 2), round(f, 2), n] for t, a, f, n in self.stats.memory],
            "failures": failures,
            "ok": not failures,
        }


# --- processes -------------------------------------------------------------------------------------


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 200; raise when ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    log = (workdir / "redis.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"redis-server did not listen on port {port}")


def traced_gateway(out: str, warmup: float) -> None:
    """Run ``gateway.cli serve`` under tracemalloc, writing the top growing lines to ``out`` every minute."""
    import runpy
    import threading
    import tracemalloc

    tracemalloc.start(1)

    def report() -> None:
        time.sleep(warmup)
        base = tracemalloc.take_snapshot()
        started = time.monotonic()
        while True:
            time.sleep(60)
            snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            top = snap.compare_to(base, "lineno")[:25]
            lines = [f"--- {time.monotonic() - started:.0f} s after warm-up"] + [str(stat) for stat in top]
            with open(out, "a") as fh:
                fh.write("\n".join(lines) + "\n")

    threading.Thread(target=report, daemon=True).start()
    sys.argv = ["gateway.cli", "serve"]
    runpy.run_module("gateway.cli", run_name="__main__", alter_sys=True)


def soak(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-soak-"))
    procs: list[subprocess.Popen[bytes]] = []
    port = free_port()
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
        | {
            "MCPGW_HOST": "127.0.0.1",
            "MCPGW_PORT": str(port),
            "MCPGW_DATA_DIR": str(workdir / "data"),
            "MCPGW_EXAMPLE_ADAPTER": "true",
            "MCPGW_LOG_LEVEL": "warning",
            "MCPGW_SESSION_TTL": str(args.session_ttl),
            "MCPGW_SESSIONS": args.sessions,
        }
        | dict(item.split("=", 1) for item in args.gateway_env)
    )
    code = 2
    try:
        redis_port = 0
        if args.sessions == "redis":
            redis, env["MCPGW_REDIS_URL"] = start_redis(workdir)
            redis_port = int(env["MCPGW_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
            procs.append(redis)
        log = (workdir / "gateway.log").open("wb")
        repo = Path(args.gateway_repo).resolve() if args.gateway_repo else REPO
        argv = [sys.executable, "-m", "gateway.cli", "serve"]
        if args.tracemalloc:
            warmup = 60 * (args.warmup if args.warmup is not None else min(3.0, args.minutes / 4))
            argv = [sys.executable, str(Path(__file__).resolve()), "traced-gateway", args.tracemalloc, str(warmup)]
        if args.malloc_trim:
            argv = [sys.executable, str(Path(__file__).resolve()), "trimmed-gateway", str(args.malloc_trim)]
        gateway = subprocess.Popen(
            argv,
            cwd=repo,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(gateway)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", gateway)
        deadline = time.monotonic() + 60
        while True:
            s = httpx.get(f"{url}/adapters/{ADAPTER}/status", headers={"X-Dev-User-Id": "dev"}, timeout=5)
            if s.status_code == 200 and s.json()["readyReplicas"] == 2:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ADAPTER} did not become ready: {s.status_code} {s.text[:300]}")
            time.sleep(0.5)
        print(f"soak: {args.minutes:g} min, {args.sessions} sessions, gateway pid {gateway.pid}, logs in {workdir}",
              file=sys.stderr)  # fmt: skip
        result = asyncio.run(Soak(args, url, gateway.pid, redis_port).run())
        result["gateway_log"] = str(workdir / "gateway.log")
        if not args.series:
            result.pop("rss_series")
            result.pop("memory_series")
        text = json.dumps(result, indent=2)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
        code = 0 if result["ok"] else 1
    except Exception as exc:
        print(f"soak: set-up failed: {exc} (logs in {workdir})", file=sys.stderr)
    finally:
        for proc in reversed(procs):
            stop(proc)
    if code == 0 and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return code


def trimmed_gateway(every: float) -> None:
    """Run ``gateway.cli serve`` calling glibc's ``malloc_trim(0)`` every ``every`` seconds (a diagnosis)."""
    import ctypes
    import runpy
    import threading

    libc = ctypes.CDLL("libc.so.6")

    def trim() -> None:
        while True:
            time.sleep(every)
            libc.malloc_trim(0)

    threading.Thread(target=trim, daemon=True).start()
    sys.argv = ["gateway.cli", "serve"]
    runpy.run_module("gateway.cli", run_name="__main__", alter_sys=True)


def main() -> int:
    if sys.argv[1:2] == ["trimmed-gateway"]:
        sys.path.insert(0, os.getcwd())
        trimmed_gateway(float(sys.argv[2]))
        return 0
    if sys.argv[1:2] == ["traced-gateway"]:
        sys.path.insert(0, os.getcwd())
        traced_gateway(sys.argv[2], float(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=12.0, help="how long the traffic runs (default 12)")
    parser.add_argument("--sessions", choices=("memory", "redis"), default="memory", help="session store")
    parser.add_argument(
        "--warmup", type=float, default=None, help="minutes left out of the slope (default min(3, 1/4))"
    )
    parser.add_argument("--max-slope", type=float, default=0.15, help="largest RSS slope (MiB/min) that passes")
    parser.add_argument("--fd-slack", type=int, default=10, help="extra fds allowed after the run")
    parser.add_argument("--session-ttl", type=float, default=120.0, help="MCPGW_SESSION_TTL of the gateway (s)")
    parser.add_argument("--gateway-repo", default=None, help="run the gateway from this checkout")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    parser.add_argument("--tracemalloc", default=None, help="trace the gateway's allocations into this file")
    parser.add_argument("--series", action="store_true", help="include every RSS/fd sample in the result")
    parser.add_argument(
        "--churn-every",
        type=float,
        default=60.0,
        help="seconds between rollouts and throwaway adapters; a replica is killed every 1.5 times that (default 60)",
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment variable of the gateway (repeatable), e.g. MALLOC_ARENA_MAX=2",
    )
    parser.add_argument(
        "--malloc-trim",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="diagnosis: the gateway calls glibc malloc_trim(0) this often (0: never)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) even when the run passed")
    return soak(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
