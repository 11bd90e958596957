"""What telemetry costs the proxy: throughput with telemetry off, on, and on with tracing, in one run.

Usage (from the repository root, with the project's virtualenv)::

    python scripts/bench_telemetry.py                 # 5 rounds x 10 s per configuration
    python scripts/bench_telemetry.py --rounds 3 --seconds 5 --connections 16

It starts, on free loopback ports, a fast upstream stub (``bench_telemetry.py stub``: raw asyncio
HTTP/1.1 answering every ``POST /mcp`` with a fixed JSON-RPC result), an OTLP/gRPC sink that
accepts and drops spans and metrics, and three gateways, each with one adapter ``stub`` of one
replica:

* ``off``     — ``MCPGW_METRICS_ENABLED=false``, ``MCPGW_LOG_LEVEL=warning`` (no metrics, no access log, no spans);
* ``on``      — the defaults: metrics for ``/metrics``, access-log lines for failed requests only;
* ``log-all`` — ``on`` plus ``MCPGW_ACCESS_LOG=all`` (one JSON line per request);
* ``tracing`` — ``on`` plus ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a span per request, exported in batches).
* ``tracing-5%`` — ``tracing`` with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, ratio 0.05.

Then wrk (one thread) sends stateless 2026-07-28 ``tools/call`` requests to each gateway in turn,
rotating the order every round, and prints requests/s per round, the medians and on/off ratios.
Every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BODY = (
    '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},'
    '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}'
)
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
    "Mcp-Name": "echo",
}


def run_stub() -> None:
    """Serve the stub on $HOST:$PORT until killed."""
    import httptools
    import uvloop

    result = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}],"isError":false}}'
    ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(result), result)
    health = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"

    class Stub(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.transport: Any = None
            self.url = b""

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_message_complete(self) -> None:
            self.transport.write(health if self.url.startswith(b"/healthz") else ok)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            Stub, os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"]), backlog=4096
        )
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def otlp_sink() -> tuple[Any, int]:
    """An OTLP/gRPC server that accepts traces and metrics and drops them; returns (server, port)."""
    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            return trace_service_pb2.ExportTraceServiceResponse()

    class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0, method: str = "GET", **kw: Any) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.request(method, url, timeout=2, **kw).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


def start_gateway(name: str, workdir: Path, catalog: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MCPGW_", "OTEL_", "APPLICATIONINSIGHTS_"))}
    full |= {
        "MCPGW_PORT": str(port),
        "MCPGW_DATA_DIR": str(workdir / name),
        "MCPGW_EXAMPLE_ADAPTER": "false",
        "MCPGW_IMAGE_CATALOG": str(catalog),
        "MCPGW_LOG_FORMAT": "json",
        **env,
    }
    log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([PYTHON, "-m", "gateway.cli", "serve"], cwd=REPO, env=full, stdout=log, stderr=log)
    log.close()
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz")
    body = {"name": "stub", "imageName": "bench-stub", "imageVersion": "1.0", "replicaCount": 1}
    created = httpx.post(url + "/adapters", json=body, headers={"X-Dev-User-Id": "dev"}, timeout=10)
    assert created.status_code == 201, created.text
    wait_http(url + "/adapters/stub/mcp", method="POST", content=BODY, headers=HEADERS)
    return proc, url


def run_wrk(url: str, script: Path, connections: int, seconds: int) -> float:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url + "/adapters/stub/mcp"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    for line in out.splitlines():
        if line.startswith("RESULT "):
            data = json.loads(line[len("RESULT ") :])
            if data["errors"]:
                raise RuntimeError(f"wrk saw {data['errors']} errors against {url}")
            return float(data["requests"]) / (float(data["duration_us"]) / 1e6)
    raise RuntimeError(f"wrk gave no result:\n{out}")


WRK = """\
wrk.method = "POST"
wrk.body = {body}
{headers}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {{"requests":%d,"duration_us":%d,"errors":%d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-telemetry-"))
    catalog = workdir / "images.toml"
    catalog.write_text(
        f'["bench-stub:1.0"]\ncommand = ["{{python}}", "{Path(__file__).resolve()}", "stub"]\nready_path = "/healthz"\n'
    )
    script = workdir / "call.lua"
    headers = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in HEADERS.items())
    script.write_text(WRK.format(body=json.dumps(BODY), headers=headers))
    sink, sink_port = otlp_sink()
    configs = {
        "off": {"MCPGW_METRICS_ENABLED": "false", "MCPGW_LOG_LEVEL": "warning"},
        "on": {},
        "log-all": {"MCPGW_ACCESS_LOG": "all"},
        "tracing": {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"},
        "tracing-5%": {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.05",
        },
    }
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, list[float]] = {name: [] for name in configs}
    try:
        urls = {}
        for name, env in configs.items():
            proc, urls[name] = start_gateway(name, workdir, catalog, env)
            procs.append(proc)
        names = list(configs)
        for name in names:  # warm-up
            run_wrk(urls[name], script, args.connections, 2)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                results[name].append(run_wrk(urls[name], script, args.connections, args.seconds))
            print(f"round {round_ + 1}: " + "  ".join(f"{n}={results[n][-1]:.0f}/s" for n in names), flush=True)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        sink.stop(0)
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"\nmedian requests/s over {args.rounds} rounds of {args.seconds}s, c={args.connections}:")
    for name, median in medians.items():
        change = (median / medians["off"] - 1) * 100
        print(f"  {name:10s} {median:8.0f}/s  {change:+.1f}% vs off")
    print(f"logs in {workdir}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "stub":
        run_stub()
    else:
        sys.exit(main())
