"""What the edge limits cost: uvicorn's plain httptools protocol against gateway/edge.py, A/B.

Usage (from the repository root, with the project's virtualenv; needs wrk)::

    python scripts/bench_edge.py                 # 5 rounds x 3 s per cell, about 2 minutes
    python scripts/bench_edge.py --rounds 3 --seconds 2
    python scripts/bench_edge.py --micro         # in-process protocol cost only, about 20 s

First, in process and without sockets (the least disturbed by other work on the machine), it
feeds the same 1 KiB keep-alive POST to uvicorn's httptools protocol, to the edge protocol and to
uvicorn's h11 protocol and prints the CPU time per request of each (``--micro``: only this).

Then it starts four servers on free loopback ports, one process each, and leaves them all running:

* ``bare``: a minimal ASGI app answering every request with a tiny JSON body (reading the
  request body first), so the protocol is most of the work — the worst case for the ratio;
* ``gateway``: the gateway's own app (``create_app``, embedded defaults, no adapters) at
  ``GET /healthz`` — a realistic share of protocol work per request;

each served once by ``uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`` (``plain``) and
once by ``gateway.edge.edge_protocol(EdgeLimits())`` (``edge``, the defaults). Requests carry about
1 KiB of headers, like an MCP client with a bearer token. For each cell, rounds alternate plain and
edge back to back (the order flips every round), with wrk (one thread). It prints requests/s and
the server's CPU time per request (user + system, from /proc) for both, and the medians of the
per-round edge/plain ratios. On a machine with other work running, read the ratios as indicative.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TOKEN = "Bearer " + "x" * 800
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "Authorization": TOKEN,
    "Mcp-Protocol-Version": "2025-11-25",
    "User-Agent": "bench-edge/1.0",
}
POST_LUA = """
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}'
"""


# --- the servers ---------------------------------------------------------------------------------


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the request body, answer a small JSON document."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = b'{"jsonrpc":"2.0","id":1,"result":{}}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def serve(protocol: str, app_name: str, port: int, data_dir: str) -> None:
    """Run one server until killed."""
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from gateway.edge import EdgeLimits, edge_protocol

    app: Any = bare_app
    if app_name == "gateway":
        from gateway.app import create_app
        from gateway.settings import load_settings

        settings = load_settings(
            {"MCPGW_DATA_DIR": data_dir, "MCPGW_EXAMPLE_ADAPTER": "false", "MCPGW_LOG_LEVEL": "warning"}
        )
        app = create_app(settings)
    http: type[Any] = HttpToolsProtocol if protocol == "plain" else edge_protocol(EdgeLimits())
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http=http,
        lifespan="on" if app_name == "gateway" else "off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=75,
        backlog=4096,
        server_header=False,
    )
    uvicorn.Server(config).run()


# --- in-process: the protocol alone ------------------------------------------------------------


class _NullTransport:
    """Enough of a transport for a protocol to serve requests into nowhere."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)


async def _protocol_cost(cls: type[Any], request: bytes, count: int) -> float:
    """CPU microseconds per request of ``count`` keep-alive requests fed to one ``cls`` instance."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    config = Config(bare_app, lifespan="off", log_level="warning", access_log=False)
    config.load()
    state = ServerState()
    protocol = cls(config=config, server_state=state, app_state={})
    protocol.connection_made(_NullTransport())
    start = time.process_time()
    for _ in range(count):
        protocol.data_received(request)
        if state.tasks:
            await asyncio.wait(set(state.tasks))
    return (time.process_time() - start) / count * 1e6


def micro(rounds: int) -> None:
    """Feed the same POST to uvicorn's httptools and h11 protocols and to the edge protocol."""
    import uvloop
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from gateway.edge import EdgeLimits, edge_protocol

    head = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in HEADERS.items())
    body = POST_LUA.split("'")[1].encode()
    request = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    classes: dict[str, type[Any]] = {
        "plain": HttpToolsProtocol,
        "edge": edge_protocol(EdgeLimits()),
        "h11": H11Protocol,
    }
    cost: dict[str, list[float]] = {name: [] for name in classes}

    async def run() -> None:
        for round_ in range(rounds):
            names = list(classes) if round_ % 2 == 0 else list(reversed(classes))
            for name in names:
                cost[name].append(await _protocol_cost(classes[name], request, 5000 if name == "h11" else 20000))

    uvloop.run(run())
    plain = statistics.median(cost["plain"])
    print(f"in-process, one keep-alive connection, {len(request)}-byte POST, medians of {rounds} rounds:")
    for name in classes:
        value = statistics.median(cost[name])
        print(f"  {name:6} {value:6.2f} us CPU per request ({value - plain:+.2f} us, x{value / plain:.3f} of plain)")


# --- measuring -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


def wrk(url: str, connections: int, seconds: float, script: Path | None) -> tuple[float, int, int]:
    """requests/s, requests, errors (non-2xx and socket errors)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s"]
    for name, value in HEADERS.items():
        cmd += ["-H", f"{name}: {value}"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if found := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(found.group(1))
    if found := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in found.groups())
    return rps, total, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=("bench", "serve"), help=argparse.SUPPRESS)
    parser.add_argument("--protocol", default="edge", help=argparse.SUPPRESS)
    parser.add_argument("--app", default="bare", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds per cell (default 5)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per wrk run (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument(
        "--micro", action="store_true", help="only the in-process protocol comparison (no sockets, no wrk)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))  # this checkout's gateway package, not an installed one
    if args.micro or args.mode == "bench":
        micro(max(args.rounds, 3))
        if args.micro:
            return 0
    if args.mode == "serve":
        serve(args.protocol, args.app, args.port, args.data_dir)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-bench-edge-"))
    procs: dict[tuple[str, str], tuple[subprocess.Popen[bytes], int]] = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
    try:
        for app in ("bare", "gateway"):
            for protocol in ("plain", "edge"):
                port = free_port()
                data_dir = workdir / f"{app}-{protocol}"
                cmd = [PYTHON, __file__, "serve", "--protocol", protocol, "--app", app, "--port", str(port)]
                cmd += ["--data-dir", str(data_dir)]
                log = open(workdir / f"{app}-{protocol}.log", "wb")  # noqa: SIM115 - handed to the child
                procs[(app, protocol)] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log), port)
        for proc, port in procs.values():
            wait_port(port, proc)
        script = workdir / "post.lua"
        script.write_text(POST_LUA)
        cells = [("bare", "POST /", "/", script), ("gateway", "GET /healthz", "/healthz", None)]
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
        print(f"{args.rounds} rounds x {args.seconds:g} s, wrk -t1 -c{args.connections}, ~1 KiB request headers")
        for app, label, path, lua in cells:
            rps: dict[str, list[float]] = {"plain": [], "edge": []}
            cpu: dict[str, list[float]] = {"plain": [], "edge": []}
            errors = 0
            for round_ in range(args.rounds):
                order = ("plain", "edge") if round_ % 2 == 0 else ("edge", "plain")
                for protocol in order:
                    proc, port = procs[(app, protocol)]
                    before = cpu_seconds(proc.pid)
                    rate, total, errs = wrk(f"http://127.0.0.1:{port}{path}", args.connections, args.seconds, lua)
                    used = cpu_seconds(proc.pid) - before
                    rps[protocol].append(rate)
                    cpu[protocol].append(used / max(total, 1) * 1e6)
                    errors += errs
            rps_ratio = statistics.median(e / p for e, p in zip(rps["edge"], rps["plain"], strict=True))
            cpu_ratio = statistics.median(e / p for e, p in zip(cpu["edge"], cpu["plain"], strict=True))
            print(
                f"{app:8} {label:13} plain {statistics.median(rps['plain']):8.0f} req/s "
                f"{statistics.median(cpu['plain']):6.1f} us CPU/req | edge {statistics.median(rps['edge']):8.0f} "
                f"req/s {statistics.median(cpu['edge']):6.1f} us CPU/req | edge/plain: throughput "
                f"{rps_ratio:.3f}, CPU per request {cpu_ratio:.3f}" + (f" | {errors} errors" if errors else "")
            )
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return 0
    finally:
        for proc, _ in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
