"""Start real gateway processes for tests, and talk to them.

``GatewayProcess`` runs ``python -m gateway.cli serve`` with MCPGW_* settings in its environment,
on a free port, and waits for /healthz. Tests use the ``gateway`` fixture (embedded defaults, no
example adapter) or ``start_gateway(...)`` for other settings. Every process is stopped at teardown.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last error: {last_error!r}")


class GatewayProcess:
    """One gateway process."""

    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "MCPGW_HOST": "127.0.0.1",
            "MCPGW_PORT": str(self.port),
            "MCPGW_DATA_DIR": str(data_dir),
            "MCPGW_EXAMPLE_ADAPTER": "false",
            "MCPGW_RECONCILE_INTERVAL": "1",
            "MCPGW_LOG_LEVEL": "info",
            "MCPGW_DRAIN_DELAY": "0",  # no load balancer to wait for; tests that drain set their own
            "MCPGW_DRAIN_TIMEOUT": "5",
            **(env or {}),
        }
        self.log_path = (
            data_dir.parent / f"gateway-{self.port}-{hashlib.sha1(str(data_dir).encode()).hexdigest()[:6]}.log"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        """Spawn and wait until /healthz answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
        env.update(self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"], cwd=REPO, env=env, stdout=log, stderr=log
        )
        log.close()

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log_text()}")
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200

        try:
            wait_for(healthy, timeout=timeout, what="gateway /healthz")
        except Exception:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        """The gateway's pid."""
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the gateway and wait for it to exit (SIGKILL after ``timeout``)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)

    def log_text(self) -> str:
        """Everything the gateway wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def client(self, user: str = "dev", roles: str = "") -> httpx.Client:
        """An HTTP client for the REST API, with dev-auth identity headers."""
        headers = {"X-Dev-User-Id": user}
        if roles:
            headers["X-Dev-Roles"] = roles
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextlib.contextmanager
def start_gateway(
    data_dir: Path, env: Mapping[str, str] | None = None, port: int | None = None
) -> Iterator[GatewayProcess]:
    """A started gateway, stopped (and its replicas with it) on exit."""
    gw = GatewayProcess(data_dir, env, port).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """An embedded gateway (SQLite, memory sessions, local runtime, dev auth), no example adapter."""
    with start_gateway(tmp_path / "data") as gw:
        yield gw


def example_adapter(name: str = "mcp-example", replicas: int = 1, **extra: Any) -> dict[str, Any]:
    """A POST /adapters body for the example image."""
    return {"name": name, "imageName": "mcp-example", "imageVersion": "1.0.0", "replicaCount": replicas, **extra}


def wait_ready(client: httpx.Client, name: str, replicas: int, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the adapter's status reports ``replicas`` ready replicas at its current generation."""

    def ready() -> dict[str, Any] | None:
        status = client.get(f"/adapters/{name}/status").json()
        current = status["observedGeneration"] == status["generation"]
        if current and status["readyReplicas"] == replicas and status["updatedReplicas"] >= replicas:
            return dict(status)
        return None

    result: dict[str, Any] = wait_for(ready, timeout=timeout, what=f"{replicas} ready replicas of {name}")
    return result


def replica_pids(data_dir: Path) -> dict[str, int]:
    """Running replica processes started for ``data_dir``: MCP_REPLICA_ID → pid (read from /proc)."""
    return {name: pid for name, (pid, _) in replica_processes(data_dir).items()}


def replica_processes(data_dir: Path) -> dict[str, tuple[int, int]]:
    """Running replica processes started for ``data_dir``: MCP_REPLICA_ID → (pid, port)."""
    from gateway.runtime._local_process import OWNER_ENV, owner_marker

    marker = f"{OWNER_ENV}={owner_marker(data_dir)}".encode()
    found: dict[str, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if marker not in environ or ") Z " in stat:
            continue
        values = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        if b"MCP_REPLICA_ID" in values:
            found[values[b"MCP_REPLICA_ID"].decode()] = (int(entry.name), int(values.get(b"PORT", b"0")))
    return found
