"""Issue 13, "Checked by": a rolling restart of every gateway, one at a time, under steady load.

Three gateway processes in kubernetes mode (the API emulator with the test kubelet, whose pods are
real example-server processes that outlive any gateway), one Redis for sessions, one shared data
dir (SQLite store, session key). In front of them a tiny load balancer, as a real one would be: a
round-robin TCP forwarder that sends new connections only to gateways whose ``/readyz`` answers
200. Clients never retry on their own; the ``mcp`` SDK client does what it always does.

Load: stateless (2026-era) calls in a loop, and 20 pinned 2025-era sessions each calling in a
loop. Each gateway in turn gets SIGTERM, drains (not-ready at once, still serving for the drain
delay, streams ended cleanly after the drain timeout), exits, and is started again on its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client

from tests.fixtures.gateway import GatewayProcess, example_adapter, wait_for, wait_ready
from tests.fixtures.kubernetes import ClusterThread, write_kubeconfig
from tests.fixtures.mcp_results import first_text
from tests.fixtures.redis import RedisServer
from tests.fixtures.telemetry import scrape, value

pytestmark = pytest.mark.slow

SESSIONS = 20
DELAY, TIMEOUT = 1.5, 3.0


class TinyBalancer:
    """Round-robin TCP forwarding to the backends whose /readyz answered 200 at the last check (every 0.1 s)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.healthy: list[int] = []
        self.port = 0
        self.refused = 0
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None
        self._checker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TinyBalancer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._checker = asyncio.create_task(self._check())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._checker is not None
        self._checker.cancel()
        self._server.close()

    async def _check(self) -> None:
        async with httpx.AsyncClient(timeout=0.5) as http:
            while True:
                healthy = []
                for port in self.ports:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                            healthy.append(port)
                self.healthy = healthy
                await asyncio.sleep(0.1)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if not self.healthy:
            self.refused += 1
            client_w.close()
            return
        port = self.healthy[next(self._turn) % len(self.healthy)]
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            self.refused += 1
            client_w.close()
            return

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    writer.close()

        await asyncio.gather(pipe(client_r, upstream_w), pipe(upstream_r, client_w))


@pytest.fixture
def k8s(tmp_path: Path) -> Iterator[ClusterThread]:
    (tmp_path / "pods").mkdir()
    with ClusterThread(tmp_path / "pods") as cluster:
        yield cluster


async def whoami(client: Client) -> str:
    result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    return first_text(result)


def test_rolling_restart_under_load_loses_no_request_and_no_session(
    k8s: ClusterThread, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {
        "MCPGW_RUNTIME": "kubernetes",
        "MCPGW_KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", k8s.url)),
        "MCPGW_KUBE_REGISTRY": "registry.test",
        "MCPGW_KUBE_LEASE_DURATION": "3",
        "MCPGW_KUBE_LEASE_RENEW_DEADLINE": "2",
        "MCPGW_KUBE_LEASE_RETRY_PERIOD": "0.5",
        "MCPGW_SESSIONS": "redis",
        "MCPGW_REDIS_URL": redis_server.url,
        "MCPGW_DRAIN_DELAY": str(DELAY),
        "MCPGW_DRAIN_TIMEOUT": str(TIMEOUT),
    }
    data_dir = tmp_path / "data"
    gateways = [GatewayProcess(data_dir, env).start(timeout=60)]
    gateways += [GatewayProcess(data_dir, env).start(timeout=60) for _ in range(2)]
    try:
        with gateways[0].client() as api:
            assert api.post("/adapters", json=example_adapter("rr", replicas=2)).status_code == 201
            wait_ready(api, "rr", 2, timeout=90)

        def answers_ready(gw: GatewayProcess) -> bool:
            return httpx.get(gw.url + "/readyz").status_code == 200

        for gw in gateways:
            wait_for(functools.partial(answers_ready, gw), timeout=20, what="ready")
        outcome = anyio.run(run_load_and_restart, gateways)
    finally:
        for gw in gateways:
            gw.stop()
    print(outcome)
    assert outcome["stateless failed"] == 0, outcome
    assert outcome["sessions lost"] == 0, outcome
    assert outcome["stateless ok"] > 50 and outcome["session calls ok"] > SESSIONS * 5, outcome
    assert outcome["streams ended by a drain"] >= SESSIONS, outcome  # every drained gateway ended its streams
    assert outcome["streams open at the end"] >= SESSIONS, outcome  # ... and the clients opened them again


async def run_load_and_restart(gateways: list[GatewayProcess]) -> Counter[str]:
    outcome: Counter[str] = Counter()
    stop = asyncio.Event()
    async with TinyBalancer([gw.port for gw in gateways]) as lb:
        await asyncio.to_thread(wait_for, lambda: len(lb.healthy) == 3, 10)
        url = f"http://127.0.0.1:{lb.port}/adapters/rr/mcp"

        async def stateless() -> None:
            async with Client(url) as client:
                while not stop.is_set():
                    try:
                        await whoami(client)
                        outcome["stateless ok"] += 1
                    except Exception as exc:
                        outcome["stateless failed"] += 1
                        print(f"stateless call failed: {exc!r}")
                    await asyncio.sleep(0.02)

        async def session(index: int) -> None:
            async with Client(url, mode="legacy") as client:
                home = await whoami(client)
                while not stop.is_set():
                    try:
                        answer = await whoami(client)
                    except Exception as exc:
                        outcome["sessions lost"] += 1
                        print(f"session {index} failed: {exc!r}")
                        return
                    if answer != home:
                        outcome["sessions lost"] += 1
                        print(f"session {index} moved from {home} to {answer}")
                        return
                    outcome["session calls ok"] += 1
                    await asyncio.sleep(0.3)

        tasks = [asyncio.create_task(stateless()) for _ in range(2)]
        tasks += [asyncio.create_task(session(i)) for i in range(SESSIONS)]
        await asyncio.sleep(2)

        def healthy(port: int) -> bool:
            return port in lb.healthy

        for i, gw in enumerate(gateways):
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(gw.proc.wait, DELAY + TIMEOUT + 20)
            assert code == 0, f"gateway {i} exited with {code}"
            outcome["streams ended by a drain"] += sum(
                int(line.split("ended ")[1].split(" ")[0])
                for line in gw.log_text().splitlines()
                if "open stream(s)" in line
            )
            gw.log_path.rename(gw.log_path.with_suffix(f".{i}.log"))
            await asyncio.to_thread(gw.start, 60)
            await asyncio.to_thread(wait_for, functools.partial(healthy, gw.port), 20)
        await asyncio.sleep(2 + 1)  # the SDK re-opens a GET stream after 1 s
        for gw in gateways:
            series = await asyncio.to_thread(scrape, gw.url)
            outcome["streams open at the end"] += int(value(series, "mcpgw_open_streams"))
        stop.set()
        await asyncio.gather(*tasks)
        outcome["balancer refused"] = lb.refused
    return outcome
