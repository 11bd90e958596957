"""A real ``redis-server`` for tests.

Import the fixtures you need into a test module::

    from tests.redis_fixtures import redis_server, redis_server_factory, redis_server_session  # noqa: F401

- ``redis_server`` — a fresh server for one test;
- ``redis_server_session`` — one server for the whole run (share it with unique key prefixes);
- ``redis_server_factory`` — ``factory(*extra_args, password=None, tls=False)`` for servers with
  options (``--requirepass``, TLS with a CA minted per server, any redis-server flag), all killed
  after the test.

Each is a :class:`RedisServer`: ``.url``, ``.port``, ``.stop()``, ``.start()`` (again on the same
port, to test outages and recovery). ``serve_all_slots(server)`` turns a server started with
``CLUSTER_ARGS`` into a one-node Redis Cluster that serves every slot. Servers run with
``--save "" --appendonly no`` on a free loopback port, die with the test process
(PR_SET_PDEATHSIG) and are always killed at teardown.
The binary is the Debian package's (``apt-get install redis-server``) or any ``redis-server`` on
PATH; ``MCPGW_TEST_REDIS_SERVER`` names another one.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from tests.tls_fixtures import write_tls_files

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

CLUSTER_ARGS = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
"""redis-server flags of a cluster node (nodes.conf lands in the server's own directory)."""


def redis_server_binary() -> str:
    """Path of redis-server; fails the test with the install command when there is none."""
    candidates = [os.environ.get("MCPGW_TEST_REDIS_SERVER"), shutil.which("redis-server"), "/usr/bin/redis-server"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "redis-server not found (looked at $MCPGW_TEST_REDIS_SERVER, PATH and /usr/bin/redis-server); "
        "install it with `apt-get install redis-server`",
        pytrace=False,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free port P on 127.0.0.1 whose cluster bus port P + 10000 is free too (so P <= 55535)."""
    for _ in range(100):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair (P, P + 10000) for a Redis Cluster node")


def _die_with_parent() -> None:
    # Linux: SIGKILL the server when the test process dies, however it dies.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class RedisServer:
    """One redis-server process on 127.0.0.1; restartable on the same port."""

    def __init__(
        self, *extra_args: str, password: str | None = None, port: int | None = None, tls: bool = False
    ) -> None:
        self.binary = redis_server_binary()
        self.extra_args = list(extra_args)
        self.password = password
        self.port = port or (free_cluster_port() if "--cluster-enabled" in extra_args else free_port())
        self.tls = tls
        self.dir = Path(tempfile.mkdtemp(prefix="mcpgw-redis-"))
        self.log_path = self.dir / "redis.log"
        self.ca_file = self.dir / "ca.pem"
        self.process: subprocess.Popen[bytes] | None = None
        if tls:
            write_tls_files(self.dir)

    @property
    def url(self) -> str:
        """redis:// (rediss:// with TLS, trusting the test CA) URL of the server, with its password if any."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}localhost:{self.port}/0?ssl_ca_certs={quote(str(self.ca_file))}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> RedisServer:
        """Start the server (again) on its port and wait until it accepts connections."""
        if self.running:
            return self
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.log_path),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            args[2] = "0"  # no plain-text port
            args += ["--tls-port", str(self.port), "--tls-auth-clients", "no"]
            args += [
                "--tls-cert-file",
                str(self.dir / "server.pem"),
                "--tls-key-file",
                str(self.dir / "server-key.pem"),
            ]
            args += ["--tls-ca-cert-file", str(self.ca_file)]
        args += self.extra_args
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode} on port {self.port}: "
                    f"{err.strip()} {self.log_tail()}"
                )
            if self._answers():
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not accept connections on port {self.port} within {START_TIMEOUT} s")

    def stop(self) -> None:
        """Shut the server down (no save), waiting until the port is closed."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr:
            process.stderr.close()
        self.process = None

    def kill(self) -> None:
        """Kill the server at once (SIGKILL)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.stop()

    def close(self) -> None:
        """Kill the server and remove its folder."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self) -> redis.Redis:
        """A synchronous client as the default user (for setting up ACL users and such); close it after use."""
        return redis.Redis.from_url(self.url, decode_responses=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as raw:
                s = raw
                if self.tls:
                    s = ssl.create_default_context(cafile=str(self.ca_file)).wrap_socket(
                        raw, server_hostname="localhost"
                    )
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:
            return False
        # +PONG, or -NOAUTH when a password is required: either way the server is serving.
        return reply.startswith((b"+PONG", b"-NOAUTH"))


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for one test."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    """One redis-server for the whole run; tests sharing it should use their own key prefixes."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """``factory(*extra_args, password=None, tls=False)`` → a started RedisServer, killed after the test."""
    servers: list[RedisServer] = []

    def make(*extra_args: str, password: str | None = None, tls: bool = False) -> RedisServer:
        server = RedisServer(*extra_args, password=password, tls=tls)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.close()


def serve_all_slots(server: RedisServer) -> RedisServer:
    """Make a node started with ``CLUSTER_ARGS`` a one-node cluster serving all 16384 slots."""
    with server.client() as c:
        c.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + START_TIMEOUT
        while c.cluster("INFO")["cluster_state"] != "ok":
            if time.monotonic() > deadline:
                raise RuntimeError(f"one-node cluster on port {server.port} not ok within {START_TIMEOUT} s")
            time.sleep(0.02)
    return server
