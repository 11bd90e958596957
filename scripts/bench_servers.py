"""Virtual server benchmark (issue 16): what a virtual server adds to a member call, and what listing
ten members costs cached and cold. Sequential requests (concurrency 1).

Usage (from the repository root, with the project's virtualenv)::

    python scripts/bench_servers.py                  # 3 repetitions, about 1.5 minutes
    python scripts/bench_servers.py --repeat 5 --requests 500
    python scripts/bench_servers.py --json out.json  # every repetition as JSON
    python scripts/bench_servers.py --gateway-repo /path/to/other/checkout   # measure another version

It starts a gateway (SQLite, memory sessions, local runtime, dev auth) on a free loopback port with
ten adapters of the example server (``mcp-example:1.0.0``, one replica each, readable by role
``bench``), a virtual server ``one`` (the adapter ``m0``, prefix ``m0_``) and ``ten`` (all ten,
prefixed), and measures with one keep-alive HTTP client (httpx), stateless 2026-07-28 requests:

* ``tools/call add`` through ``/adapters/m0/mcp`` and through ``/servers/one/mcp``, **alternating
  request by request**, so a busy machine slows both alike: the p50 added is the difference of the
  two p50s of the same repetition;
* ``tools/list`` through ``/servers/ten/mcp``, cached (the same user again, within the listing TTL)
  and cold (a new user each request, so every member is listed again).

Each row also shows the gateway's CPU per request: user + system time of the gateway process
(``/proc/<pid>/stat``) over a block of the row's requests, divided by their number (for the two call
rows, one more block of each, not alternating). The summary lines are medians over the repetitions.
The machine's load average and how busy its CPUs were before the start are printed: numbers from a
busy machine are noisier and larger (the added p50 less so, being a difference).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
MEMBERS = 10
LEGACY = "2025-11-25"
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rpc(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A 2026-07-28 request body."""
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": META}}


def headers(method: str, name: str | None, user: str) -> dict[str, str]:
    """The routing headers of a 2026-07-28 request, with a dev identity."""
    out = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": method,
        "X-Dev-User-Id": user,
        "X-Dev-Roles": "bench",
    }
    if name is not None:
        out["Mcp-Name"] = name
    return out


def session(client: httpx.Client, url: str, user: str) -> dict[str, str]:
    """A 2025-era session opened on ``url`` (initialize + initialized): the headers of its requests."""
    hdrs = {"Accept": "application/json, text/event-stream", "X-Dev-User-Id": user, "X-Dev-Roles": "bench"}
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
    opened = client.post(url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}, headers=hdrs)
    if opened.status_code != 200 or "mcp-session-id" not in opened.headers:
        raise RuntimeError(f"{url}: initialize answered {opened.status_code} {opened.text[:300]}")
    hdrs |= {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": LEGACY}
    client.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=hdrs)
    return hdrs


def one(client: httpx.Client, url: str, body: dict[str, Any], hdrs: dict[str, str]) -> float:
    """One request; its latency in ms; the answer checked."""
    started = time.perf_counter()
    response = client.post(url, json=body, headers=hdrs)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200 or '"error"' in response.text:
        raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
    return elapsed


def cpu_ms(pid: int) -> float:
    """utime + stime of ``pid`` in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_MS


def cpu_busy_fraction(seconds: float) -> float:
    """How busy all CPUs were over ``seconds`` (0..1), from /proc/stat."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields[:8])

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def measured(pid: int, requests: int, work: Callable[[], Any]) -> tuple[Any, float]:
    """``work()``'s result and the gateway's CPU per request (ms) while it ran."""
    before = cpu_ms(pid)
    result = work()
    return result, (cpu_ms(pid) - before) / requests


def p50(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def p90(values: list[float]) -> float:
    """The 90th percentile."""
    return statistics.quantiles(values, n=10)[-1]


def repetition(client: httpx.Client, pid: int, n: int) -> dict[str, Any]:
    """One repetition of every row."""
    call = rpc("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}})
    vcall = rpc("tools/call", {"name": "m0_add", "arguments": {"a": 1, "b": 2}})
    direct_headers = headers("tools/call", "add", "u")
    virtual_headers = headers("tools/call", "m0_add", "u")

    def calls() -> tuple[list[float], list[float]]:
        direct: list[float] = []
        virtual: list[float] = []
        for _ in range(n):
            direct.append(one(client, "/adapters/m0/mcp", call, direct_headers))
            virtual.append(one(client, "/servers/one/mcp", vcall, virtual_headers))
        return direct, virtual

    (direct, virtual), _ = measured(pid, 2 * n, calls)
    # 2025-era sessions (2026-12-01): the virtual server answers a session's call as a resumable SSE
    # stream (priming event, buffered events), the direct route as the example server does.
    direct_session = session(client, "/adapters/m0/mcp", "u")
    virtual_session = session(client, "/servers/one/mcp", "u")
    arguments = {"a": 1, "b": 2}
    call25 = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": arguments}}
    vcall25 = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "m0_add", "arguments": arguments}}
    direct25: list[float] = []
    virtual25: list[float] = []
    for _ in range(n):
        direct25.append(one(client, "/adapters/m0/mcp", call25, direct_session))
        virtual25.append(one(client, "/servers/one/mcp", vcall25, virtual_session))
    for path, hdrs in (("/adapters/m0/mcp", direct_session), ("/servers/one/mcp", virtual_session)):
        client.delete(path, headers=hdrs)
    _, direct_cpu = measured(pid, n, lambda: [one(client, "/adapters/m0/mcp", call, direct_headers) for _ in range(n)])
    _, virtual_cpu = measured(
        pid, n, lambda: [one(client, "/servers/one/mcp", vcall, virtual_headers) for _ in range(n)]
    )
    listing = rpc("tools/list", {})
    list_headers = headers("tools/list", None, "u")
    one(client, "/servers/ten/mcp", listing, list_headers)  # fills the cache
    cached, cached_cpu = measured(
        pid, n, lambda: [one(client, "/servers/ten/mcp", listing, list_headers) for _ in range(n)]
    )
    cold_n = max(20, n // 5)
    cold, cold_cpu = measured(
        pid,
        cold_n,
        lambda: [
            one(client, "/servers/ten/mcp", listing, headers("tools/list", None, f"cold-{uuid.uuid4().hex[:8]}"))
            for _ in range(cold_n)
        ],
    )
    return {
        "direct": direct,
        "virtual": virtual,
        "direct25": direct25,
        "virtual25": virtual25,
        "cached": cached,
        "cold": cold,
        "cpu": {"direct": direct_cpu, "virtual": virtual_cpu, "cached": cached_cpu, "cold": cold_cpu},
    }


def main() -> int:
    """Run the benchmark and print its rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per row and repetition")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (the summary is their median)")
    parser.add_argument("--json", type=Path, help="write every repetition's latencies here")
    parser.add_argument(
        "--gateway-repo", type=Path, default=REPO, help="run the gateway of another checkout (before/after runs)"
    )
    args = parser.parse_args()
    port = free_port()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    busy = cpu_busy_fraction(1.0)
    runs: list[dict[str, Any]] = []
    count = 0
    with tempfile.TemporaryDirectory(prefix="bench-servers-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")} | {
            "MCPGW_PORT": str(port),
            "MCPGW_DATA_DIR": str(Path(tmp) / "data"),
            "MCPGW_EXAMPLE_ADAPTER": "false",
            "MCPGW_LOG_LEVEL": "warning",
            "MCPGW_SERVER_LIST_TTL": "300",
        }
        log = open(Path(tmp) / "gateway.log", "wb")  # noqa: SIM115 - handed to the child
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"], cwd=args.gateway_repo, env=env, stdout=log, stderr=log
        )
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=60) as client:
                deadline = time.monotonic() + 30
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get("/healthz").status_code == 200:
                            break
                    if time.monotonic() > deadline or gateway.poll() is not None:
                        raise RuntimeError("the gateway did not start")
                    time.sleep(0.2)
                admin = {"X-Dev-User-Id": "admin", "X-Dev-Roles": "mcp.admin"}
                for i in range(MEMBERS):
                    spec = {
                        "name": f"m{i}",
                        "imageName": "mcp-example",
                        "imageVersion": "1.0.0",
                        "replicaCount": 1,
                        "requiredRoles": ["bench"],
                    }
                    client.post("/adapters", json=spec, headers=admin).raise_for_status()
                members = [{"adapter": f"m{i}", "prefix": f"m{i}_"} for i in range(MEMBERS)]
                for name, chosen in (("one", members[:1]), ("ten", members)):
                    body = {"name": name, "requiredRoles": ["bench"], "members": chosen}
                    client.post("/servers", json=body, headers=admin).raise_for_status()
                deadline = time.monotonic() + 90
                while any(
                    client.get(f"/adapters/m{i}/status", headers=admin).json()["readyReplicas"] < 1
                    for i in range(MEMBERS)
                ):
                    if time.monotonic() > deadline:
                        raise RuntimeError("adapters did not become ready")
                    time.sleep(0.5)
                repetition(client, gateway.pid, 20)  # warm-up: connections, member eras, caches
                for _ in range(args.repeat):
                    runs.append(repetition(client, gateway.pid, args.requests))
                listing = rpc("tools/list", {})
                tools = client.post("/servers/ten/mcp", json=listing, headers=headers("tools/list", None, "u"))
                count = len(tools.json()["result"]["tools"])
        finally:
            gateway.terminate()
            try:
                gateway.wait(20)
            except subprocess.TimeoutExpired:
                gateway.kill()
            log.close()
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"virtual servers, concurrency 1, {args.requests} requests per row, {args.repeat} repetitions; "
        f"load average {load_before} before, {load_after} after; CPUs {busy:.0%} busy in the second before"
    )
    print("| row | p50 ms | p90 ms | gateway CPU ms/req |")
    print("|---|---:|---:|---:|")
    rows = (
        ("tools/call via /adapters/m0/mcp", "direct"),
        ("tools/call via /servers/one/mcp", "virtual"),
        ("tools/call via /adapters/m0/mcp, 2025-era session", "direct25"),
        ("tools/call via /servers/one/mcp, 2025-era session (SSE answer)", "virtual25"),
        (f"tools/list /servers/ten/mcp ({MEMBERS} members, {count} tools), cached", "cached"),
        (f"tools/list /servers/ten/mcp ({MEMBERS} members), cold", "cold"),
    )
    for label, key in rows:
        # Medians over the repetitions of each repetition's p50 / p90.
        row_p50 = p50([p50(r[key]) for r in runs])
        row_p90 = p50([p90(r[key]) for r in runs])
        cpus = [r["cpu"][key] for r in runs if key in r["cpu"]]
        row_cpu = f"{p50(cpus):.2f}" if cpus else "-"
        print(f"| {label} | {row_p50:.2f} | {row_p90:.2f} | {row_cpu} |")
    added = [p50(r["virtual"]) - p50(r["direct"]) for r in runs]
    cpu_added = [r["cpu"]["virtual"] - r["cpu"]["direct"] for r in runs]
    print(
        "p50 added by the virtual server to tools/call: "
        f"{p50(added):.2f} ms (repetitions: {', '.join(f'{a:+.2f}' for a in added)}); "
        f"gateway CPU added {p50(cpu_added):.2f} ms/call"
    )
    added25 = [p50(r["virtual25"]) - p50(r["direct25"]) for r in runs]
    print(
        "p50 added by the virtual server to tools/call in a 2025-era session: "
        f"{p50(added25):.2f} ms (repetitions: {', '.join(f'{a:+.2f}' for a in added25)})"
    )
    cached = [p50(r["cached"]) for r in runs]
    print(f"tools/list cached p50: {p50(cached):.2f} ms (repetitions: {', '.join(f'{c:.2f}' for c in cached)})")
    if args.json is not None:
        args.json.write_text(json.dumps({"requests": args.requests, "tools": count, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
