"""Virtual server benchmark (issue 16): what a virtual server adds to a member call, and what listing
ten members costs cached and cold. Indicative: sequential requests (concurrency 1), one run.

Usage (from the repository root, with the project's virtualenv)::

    python scripts/bench_servers.py            # about 1 minute
    python scripts/bench_servers.py --requests 100

It starts a gateway (SQLite, memory sessions, local runtime, dev auth) on a free loopback port with
ten adapters of the example server (``mcp-example:1.0.0``, one replica each, readable by role
``bench``), a virtual server ``one`` (the adapter ``m0``, prefix ``m0_``) and ``ten`` (all ten,
prefixed), and measures with one keep-alive HTTP client, stateless 2026-07-28 requests:

* ``tools/call add`` through ``/adapters/m0/mcp`` and through ``/servers/one/mcp``: the p50 added;
* ``tools/list`` through ``/servers/ten/mcp``, cached (the same user again, within the listing TTL)
  and cold (a new user each request, so every member is listed again).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
MEMBERS = 10


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


def timed(client: httpx.Client, url: str, body: dict[str, Any], hdrs: dict[str, str], n: int) -> list[float]:
    """``n`` sequential requests; latencies in ms; every answer checked."""
    out: list[float] = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.post(url, json=body, headers=hdrs)
        out.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200 or '"error"' in response.text:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
    return out


def p50(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def main() -> int:
    """Run the benchmark and print its rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per row")
    args = parser.parse_args()
    port = free_port()
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
            [sys.executable, "-m", "gateway.cli", "serve"], cwd=REPO, env=env, stdout=log, stderr=log
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
                n = args.requests
                call = rpc("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}})
                vcall = rpc("tools/call", {"name": "m0_add", "arguments": {"a": 1, "b": 2}})
                timed(client, "/adapters/m0/mcp", call, headers("tools/call", "add", "u"), 20)
                timed(client, "/servers/one/mcp", vcall, headers("tools/call", "m0_add", "u"), 20)
                direct = timed(client, "/adapters/m0/mcp", call, headers("tools/call", "add", "u"), n)
                virtual = timed(client, "/servers/one/mcp", vcall, headers("tools/call", "m0_add", "u"), n)
                listing = rpc("tools/list", {})
                timed(client, "/servers/ten/mcp", listing, headers("tools/list", None, "u"), 5)
                cached = timed(client, "/servers/ten/mcp", listing, headers("tools/list", None, "u"), n)
                cold: list[float] = []
                for _ in range(max(20, n // 5)):
                    user = f"cold-{uuid.uuid4().hex[:8]}"
                    cold += timed(client, "/servers/ten/mcp", listing, headers("tools/list", None, user), 1)
                tools = client.post("/servers/ten/mcp", json=listing, headers=headers("tools/list", None, "u"))
                count = len(tools.json()["result"]["tools"])
        finally:
            gateway.terminate()
            try:
                gateway.wait(20)
            except subprocess.TimeoutExpired:
                gateway.kill()
            log.close()
    print(f"virtual servers, concurrency 1, {n} requests per row (indicative)")
    print("| row | p50 ms | p90 ms |")
    print("|---|---|---|")
    for label, values in (
        ("tools/call via /adapters/m0/mcp", direct),
        ("tools/call via /servers/one/mcp", virtual),
        (f"tools/list /servers/ten/mcp ({MEMBERS} members, {count} tools), cached", cached),
        (f"tools/list /servers/ten/mcp ({MEMBERS} members), cold", cold),
    ):
        print(f"| {label} | {p50(values):.2f} | {statistics.quantiles(values, n=10)[-1]:.2f} |")
    print(f"p50 added by the virtual server to tools/call: {p50(virtual) - p50(direct):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
