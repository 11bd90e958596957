"""A replica's port, taken by another program before the replica binds it, never becomes its endpoint.

The local runtime picks a free loopback port and the child binds it a moment later; in between,
anything else on the host (another replica, another gateway, a hostile local program) can bind
it. A readiness probe alone would then find "a server on the port" and route the adapter's
traffic, with its users' tokens and arguments, to that program. The probe also asks who owns the
listening socket: only the replica's own process tree counts (``listener_owned``).
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.runtime import _local_replica
from gateway.runtime._local_process import listener_owned
from tests.fixtures.local_runtime import RuntimeFactory, record, wait_until


class _Answer200(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def squatter() -> Iterator[int]:
    """A foreign HTTP server on a loopback port that answers every GET with 200: the port thief."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer200)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_a_port_taken_before_the_replica_binds_it_is_not_its_endpoint(
    make_runtime: RuntimeFactory, squatter: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race, made certain: the runtime is handed the port the squatter already holds, and the
    # replica (sleeper: never binds) stays alive, so only the ownership check can tell.
    monkeypatch.setattr(_local_replica, "claim_port", lambda: squatter)
    runtime = await make_runtime(local_ready_timeout=5, local_restart_backoff_max=0.5)
    sleeper = record("victim", 1, image=("sleeper", "1"))
    await runtime.apply(sleeper)

    async def refused() -> object:
        status = await runtime.status(sleeper)
        text = " ".join([i.message for i in status.instances] + [i.message for i in status.issues])
        return status if f"port {squatter} is held by another program" in text else None

    await wait_until(refused, within=15, what="the probe to refuse the squatter's port")
    assert runtime.endpoints("victim") == ()
    assert "held by another program" in await runtime.logs("victim", 0, 50)


def test_listener_owned_tells_the_owner_from_anyone_else(tmp_path: Path) -> None:
    with socket.socket() as mine:
        mine.bind(("127.0.0.1", 0))
        mine.listen()
        port = mine.getsockname()[1]
        assert listener_owned(port, os.getpid()) is True
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert listener_owned(port, sleeper.pid) is False  # a live process tree that holds no such socket
        finally:
            sleeper.kill()
            sleeper.wait()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        unused = closed.getsockname()[1]
    assert listener_owned(unused, os.getpid()) is None  # nobody listens: nothing to tell
