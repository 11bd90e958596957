"""A hostile test upstream: at start it tries to reach the gateway's secrets, then serves /healthz.

Run as a replica by the local runtime (tests/adversarial/test_replica_isolation.py). Standard
library only, so any ``python3`` runs it (the replica user may not reach the gateway's venv).
The environment names its targets: ``HOSTILE_DATA_DIR`` (the gateway's data dir),
``HOSTILE_GATEWAY_PID`` and ``HOSTILE_OUTSIDE`` (a world-writable folder outside the replica's
working area). It prints one line ``HOSTILE-REPORT {json}``: for each attempt, ``"done: ..."``
or ``"refused: <error>"``.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path


def attempt(report: dict[str, str], what: str, action: Callable[[], object]) -> None:
    try:
        result = action()
    except Exception as exc:
        report[what] = f"refused: {type(exc).__name__}: {exc}"
    else:
        report[what] = f"done: {str(result)[:120]}"


def gateway_environs() -> list[int]:
    """Every process whose environment this replica can read and that holds MCPGW_* settings."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if b"\0MCPGW_" in b"\0" + Path(f"/proc/{entry.name}/environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    if not found:
        raise PermissionError("no readable environment holds MCPGW_*")
    return found


def touch(path: Path) -> str:
    path.write_text("owned\n")
    return str(path)


def main() -> None:
    data = Path(os.environ["HOSTILE_DATA_DIR"])
    gateway_pid = os.environ["HOSTILE_GATEWAY_PID"]
    outside = Path(os.environ["HOSTILE_OUTSIDE"])
    replica = os.environ.get("MCP_REPLICA_ID", "replica")
    report: dict[str, str] = {"whoami": f"uid {os.getuid()} gid {os.getgid()}"}
    status = Path("/proc/self/status").read_text().splitlines()
    report["capabilities"] = next(line.split()[1] for line in status if line.startswith("CapEff:"))
    attempt(report, "read session.key", lambda: len((data / "session.key").read_bytes()))
    attempt(report, "read gateway.db", lambda: len((data / "gateway.db").read_bytes()))
    attempt(report, "open gateway.db for writing", lambda: (data / "gateway.db").open("r+b").close())
    attempt(report, "list the data dir", lambda: os.listdir(data))
    attempt(report, "list the logs", lambda: os.listdir(data / "logs"))
    attempt(report, "read the gateway's environ", lambda: len(Path(f"/proc/{gateway_pid}/environ").read_bytes()))
    attempt(report, "find any MCPGW_ environment", gateway_environs)
    attempt(report, "create a file in the data dir", lambda: touch(data / f"owned-by-{replica}"))
    attempt(report, "create a file outside", lambda: touch(outside / f"owned-by-{replica}"))
    attempt(report, "write its own working area", lambda: touch(Path(os.environ["HOME"]) / "mine"))
    print("HOSTILE-REPORT " + json.dumps(report, sort_keys=True), flush=True)

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Health)
    print(f"hostile replica {replica} serving", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
