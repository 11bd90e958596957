"""One local replica: a supervised child process, probed for readiness and restarted on crash."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from gateway.child_process import signal_group
from gateway.runtime._local_catalog import expand_process
from gateway.runtime._local_isolation import Isolation
from gateway.runtime._local_process import (
    OWNER_ENV,
    claim_port,
    listener_owned,
    probe,
    probe_detail,
    release_port,
    wait_group_gone,
)
from gateway.runtime.base import Endpoint

log = logging.getLogger("gateway.runtime.local")

BACKOFF_BASE = 0.5
"""First restart delay in seconds; doubles on each consecutive failure up to local_restart_backoff_max."""
STABLE_AFTER = 60.0
"""Seconds of readiness after which a crash counts as a first failure again (the backoff resets)."""
PROBE_PERIOD = 5.0
"""Seconds between readiness probes of a ready replica."""
PROBE_TIMEOUT = 2.0
PROBE_FAILURES = 3
"""Consecutive failed probes after which a ready replica leaves the endpoints."""
STOP_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL when a replica is stopped."""
LOG_ROTATE_BYTES = 16 * 1024 * 1024
"""A log file larger than this is moved to ``<name>.log.1`` when its replica (re)starts."""


@dataclasses.dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything that decides what a replica process is; a change means a rolling replacement."""

    image: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    ready_path: str | None
    cwd: str | None
    writable: tuple[str, ...] = ()
    """Folders under the data dir the replica may write (a package cache), bound into its sandbox."""
    expose: tuple[str, ...] = ()
    """Further folders the replica needs to see (a stdio server's working directory)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicaContext:
    """What every replica of one runtime shares."""

    log_dir: Path
    base_env: dict[str, str]
    marker: str
    ready_timeout: float
    backoff_max: float
    isolation: Isolation
    """Which user and sandbox replicas run in (see _local_isolation)."""
    on_change: Callable[[Replica], None]
    """Called (synchronously) whenever readiness, state or the process of a replica changes."""


def describe_exit(returncode: int) -> str:
    """'exited with code 3' or 'killed by SIGKILL'."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class Replica:
    """One incarnation of replica ``index`` of an adapter: a process restarted until stopped.

    A rolling replacement creates a new Replica for the same index; ``uid`` changes on every
    process start, so sessions pinned to a dead process are recognised.
    """

    def __init__(self, adapter: str, index: int, spec: LaunchSpec, generation: int, ctx: ReplicaContext) -> None:
        self.adapter = adapter
        self.index = index
        self.name = f"{adapter}-{index}"
        self.spec = spec
        self.generation = generation
        self.state = "Pending"
        self.ready = False
        self.restarts = 0
        self.failures = 0
        """Consecutive failures (crash or readiness timeout) since the replica was last stable."""
        self.message = ""
        self.last_failure = ""
        self.port = 0
        self.uid = ""
        self.pid: int | None = None
        self._ctx = ctx
        self._stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def log_path(self) -> Path:
        """Where this replica's stdout and stderr go (shared by every incarnation of the index)."""
        return self._ctx.log_dir / f"{self.name}.log"

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint of the current process."""
        return Endpoint(replica=self.name, uid=self.uid, url=f"http://127.0.0.1:{self.port}")

    @property
    def crash_looping(self) -> bool:
        """True while the replica, having failed at least twice in a row, is not ready."""
        return self.failures >= 2 and not self.ready

    def start(self) -> None:
        """Begin supervising (returns at once)."""
        self._task = asyncio.create_task(self._supervise(), name=f"replica:{self.name}")

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Leave the endpoints now, SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
        if self._stopping:
            if self._task is not None:
                await asyncio.shield(self._task)
            return
        self._stopping = True
        self._wake.set()
        self._update(ready=False, state="Terminating", message="")
        task = self._task
        if task is None:
            return
        if self.pid is not None:
            signal_group(self.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=grace)
        except TimeoutError:
            if self.pid is not None:
                signal_group(self.pid, signal.SIGKILL)
            await asyncio.shield(task)

    def _update(self, *, ready: bool | None = None, state: str | None = None, message: str | None = None) -> None:
        if ready is not None:
            self.ready = ready and not self._stopping
        if state is not None:
            self.state = state
        if message is not None:
            self.message = message
        self._ctx.on_change(self)

    async def _supervise(self) -> None:
        try:
            while not self._stopping:
                ready_for = await self._run_process()
                if self._stopping:
                    break
                self.restarts += 1
                self.failures = 1 if ready_for >= STABLE_AFTER else self.failures + 1
                delay = max(0.05, min(self._ctx.backoff_max, BACKOFF_BASE * 2 ** (self.failures - 1)))
                state = "CrashLoopBackOff" if self.crash_looping else "Restarting"
                self._update(ready=False, state=state, message=f"{self.last_failure}; restarting in {delay:.1f}s")
                log.warning("replica %s %s; restart %d in %.1fs", self.name, self.last_failure, self.restarts, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
        finally:
            self._update(ready=False, state="Stopped", message="")

    def _environment(self, isolation_env: dict[str, str]) -> dict[str, str]:
        env = dict(self._ctx.base_env)
        env.update((k, expand_process(v, port=self.port, replica=self.name)) for k, v in self.spec.env)
        env.update(isolation_env)  # HOME and TMPDIR: the replica's own working area
        env.update(
            {"HOST": "127.0.0.1", "PORT": str(self.port), "MCP_REPLICA_ID": self.name, OWNER_ENV: self._ctx.marker}
        )
        return env

    def _open_log(self) -> int:
        path = self.log_path
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > LOG_ROTATE_BYTES:
                path.replace(path.with_name(path.name + ".1"))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return fd

    def _log_line(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with contextlib.suppress(OSError), self.log_path.open("a", encoding="utf-8") as f:
            f.write(f"----- mcp-gateway {stamp}: {self.name} {text} -----\n")

    async def _run_process(self) -> float:
        """Start one process and watch it until it exits; return how long it was ready."""
        self.port = claim_port()
        try:
            return await self._run_on_port()
        finally:
            release_port(self.port)

    async def _run_on_port(self) -> float:
        self.uid = uuid.uuid4().hex[:16]
        self._update(ready=False, state="Starting", message="")
        command = [expand_process(c, port=self.port, replica=self.name) for c in self.spec.command]
        fd = self._open_log()
        try:
            os.write(
                fd,
                f"----- mcp-gateway {time.strftime('%Y-%m-%dT%H:%M:%S%z')}: {self.name} starting "
                f"{self.spec.image} generation {self.generation} on port {self.port} (uid {self.uid}) -----\n".encode(),
            )
            # The log file is opened here and handed over: the replica never opens the log dir.
            start = self._ctx.isolation.launch(
                command,
                cwd=self.spec.cwd,
                replica=self.name,
                writable=[Path(w) for w in self.spec.writable],
                expose=[Path(e) for e in self.spec.expose],
            )
            process = await asyncio.create_subprocess_exec(
                *start.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=asyncio.subprocess.STDOUT,
                env=self._environment(start.env),
                cwd=start.cwd,
                start_new_session=True,  # own session and process group: signalled as one
                close_fds=True,
            )
        except (OSError, ValueError) as exc:
            self.last_failure = f"cannot start {command[0]!r}: {exc}"
            self._log_line(self.last_failure)
            return 0.0
        finally:
            os.close(fd)
        self.pid = process.pid
        if self._stopping:  # stop() ran while the process was being spawned
            signal_group(process.pid, signal.SIGTERM)
        self._update()
        try:
            return await self._watch(process)
        finally:
            # The group may hold children of the replica: none survives its leader.
            signal_group(process.pid, signal.SIGKILL)
            if process.returncode is None:
                await process.wait()
            await wait_group_gone(process.pid)
            self.pid = None
            self._log_line(self._describe_exit(process.returncode if process.returncode is not None else -9))
            self._update(ready=False)

    def _describe_exit(self, returncode: int) -> str:
        return describe_exit(self._ctx.isolation.exit_code(returncode))

    async def _watch(self, process: asyncio.subprocess.Process) -> float:
        loop = asyncio.get_running_loop()
        exited = asyncio.ensure_future(process.wait())
        try:
            deadline = loop.time() + self._ctx.ready_timeout
            interval = 0.05
            while True:
                done, _ = await asyncio.wait({exited}, timeout=interval)
                if done:
                    self.last_failure = f"{self._describe_exit(exited.result())} before it was ready"
                    return 0.0
                if self._stopping:
                    continue
                ok, seen = await probe_detail(self.port, self.spec.ready_path, PROBE_TIMEOUT)
                if ok and await asyncio.to_thread(listener_owned, self.port, process.pid) is False:
                    # Another program bound the port between our pick and the child's bind: what
                    # answered is not this replica, and must never become its endpoint.
                    self.last_failure = f"port {self.port} is held by another program, not by this replica"
                    self._log_line(self.last_failure)
                    signal_group(process.pid, signal.SIGKILL)
                    await exited
                    return 0.0
                if ok:
                    break
                if f"readiness probe: {seen}" != self.message:
                    # Status shows what the probe saw, not an empty "Starting" (issue 17).
                    self._update(message=f"readiness probe: {seen}")
                if loop.time() > deadline:
                    self.last_failure = f"not ready within {self._ctx.ready_timeout:g}s (last probe: {seen})"
                    signal_group(process.pid, signal.SIGKILL)
                    await exited
                    return 0.0
                interval = min(interval * 1.5, 0.5)
            ready_at = loop.time()
            self._update(ready=True, state="Running", message="")
            failed_probes = 0
            while True:
                done, _ = await asyncio.wait({exited}, timeout=PROBE_PERIOD)
                if done:
                    self.last_failure = self._describe_exit(exited.result())
                    return loop.time() - ready_at
                if self._stopping:
                    continue
                if await probe(self.port, self.spec.ready_path, PROBE_TIMEOUT):
                    if not self.ready:
                        self._update(ready=True, state="Running", message="")
                    failed_probes = 0
                else:
                    failed_probes += 1
                    if failed_probes >= PROBE_FAILURES and self.ready:
                        self._update(ready=False, state="NotReady", message="readiness probe failing")
        finally:
            if not exited.done():
                exited.cancel()
