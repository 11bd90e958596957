"""Fixtures and helpers for the local runtime tests.

Run as a script (``python -m tests.local_runtime_fixtures DATA_DIR CATALOG NAME:IMAGE:REPLICAS ...``)
it starts a LocalRuntime, applies the given adapters, prints ``READY <json pids>`` once every replica
is ready, and waits forever: the SIGKILL test kills it from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.app import local_runtime_config
from gateway.models import AdapterRecord
from gateway.runtime._local_process import find_owned_processes, owner_marker
from gateway.runtime.local import LocalRuntime
from gateway.settings import Settings, load_settings

EXAMPLE_IMAGE = ("mcp-example", "1.0.0")


def record(
    name: str = "demo",
    replicas: int = 1,
    *,
    env: dict[str, str] | None = None,
    generation: int = 1,
    image: tuple[str, str] = EXAMPLE_IMAGE,
) -> AdapterRecord:
    """An adapter record as the reconciler would pass it."""
    return AdapterRecord(
        name=name,
        image_name=image[0],
        image_version=image[1],
        environment_variables=env or {},
        replica_count=replicas,
        generation=generation,
    )


async def wait_until(check: Callable[[], Awaitable[Any] | Any], within: float = 30.0, what: str = "") -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while loop.time() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within}s waiting for {what or check}; last value {last!r}")


def replica_processes(data_dir: Path) -> dict[int, str]:
    """Live processes started by a runtime on ``data_dir``: pid → MCP_REPLICA_ID (read from /proc)."""
    found = {}
    for pid in find_owned_processes(owner_marker(data_dir)):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ids = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"MCP_REPLICA_ID=")]
        found[pid] = ids[0] if ids else "?"
    return found


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


async def call_tool(url: str, tool: str, arguments: dict[str, Any] | None = None) -> Any:
    """Call one tool of an MCP server with the real SDK client; return its structured result."""
    from mcp import Client

    async with Client(url + "/mcp") as client:
        result = await client.call_tool(tool, arguments or {})
        return result.structured_content["result"]


def write_catalog(path: Path, entries: dict[str, dict[str, Any]]) -> Path:
    """Write a user image catalog (TOML) with the given entries."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {json.dumps(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    lines = []
    for image, entry in entries.items():
        lines.append(f'["{image}"]')
        lines.extend(f"{k} = {value(v)}" for k, v in entry.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


CRASHER = {"command": ["{python}", "-c", "import sys; print('boom', flush=True); sys.exit(3)"]}
"""An image whose process prints a line and exits with code 3."""

ESCAPER = {
    "command": ["/bin/sh", "-c", "sleep 300 & exec {python} {repo}/examples/mcp-example/server.py"],
    "ready_path": "/healthz",
    # The script path is inside the shell string, so the sandbox cannot see it there: the catalog's
    # cwd is what makes its folder visible when the checkout lives under a path the sandbox hides (/tmp).
    "cwd": "{repo}/examples/mcp-example",
}
"""The example server, with a grandchild (sleep) that PDEATHSIG does not reach when the gateway dies."""


SLEEPER = {"command": ["sleep", "300"]}
"""An image that never listens on its port: never ready."""

HTTP_SERVER = {"command": ["{python}", "-m", "http.server", "{port}", "--bind", "127.0.0.1"], "cwd": "{catalog_dir}"}
"""Python's static file server, told its port by the {port} placeholder; readiness by TCP connect."""


@pytest.fixture
def test_catalog(tmp_path: Path) -> Path:
    """A user catalog with the test images.

    Its folder is the http-server image's cwd: readable by the replica user (pytest makes
    ``tmp_path`` 0700, and a root gateway runs replicas as ``nobody``).
    """
    tmp_path.chmod(0o755)
    return write_catalog(
        tmp_path / "catalog.toml",
        {"crasher:1": CRASHER, "escaper:1": ESCAPER, "sleeper:1": SLEEPER, "http-server:1": HTTP_SERVER},
    )


RuntimeFactory = Callable[..., Awaitable[LocalRuntime]]


@pytest.fixture
async def make_runtime(tmp_path: Path, test_catalog: Path) -> AsyncIterator[RuntimeFactory]:
    """Start LocalRuntimes on ``tmp_path/data`` (or another data dir); close them all afterwards.

    Teardown also asserts that nothing carrying the runtime's marker survives, and kills it if so.
    """
    runtimes: list[LocalRuntime] = []
    data_dirs: set[Path] = set()

    async def make(data_dir: Path | None = None, **overrides: Any) -> LocalRuntime:
        data_dir = data_dir or tmp_path / "data"
        # No replica draining unless a test asks for it: these tests watch processes come and go.
        overrides.setdefault("replica_drain_timeout", 0)
        settings = Settings(data_dir=data_dir, image_catalog=overrides.pop("image_catalog", test_catalog), **overrides)
        runtime = LocalRuntime(local_runtime_config(settings))
        await runtime.start()
        runtimes.append(runtime)
        data_dirs.add(data_dir)
        return runtime

    yield make
    for runtime in reversed(runtimes):
        await runtime.close()
    leftovers = {d: replica_processes(d) for d in data_dirs}
    for procs in leftovers.values():
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not any(leftovers.values()), f"processes left after close: {leftovers}"


async def _serve(data_dir: Path, catalog: Path, specs: list[str]) -> None:
    isolation = load_settings(os.environ)  # MCPGW_LOCAL_SANDBOX / MCPGW_LOCAL_REPLICA_USER from the test
    runtime = LocalRuntime(
        local_runtime_config(
            Settings(
                data_dir=data_dir,
                image_catalog=catalog,
                local_sandbox=isolation.local_sandbox,
                local_replica_user=isolation.local_replica_user,
            )
        )
    )
    await runtime.start()
    records = []
    for spec in specs:
        name, image, replicas = spec.split(":")
        image_name, image_version = EXAMPLE_IMAGE if image == "example" else (image, "1")
        records.append(record(name, int(replicas), image=(image_name, image_version)))
        await runtime.apply(records[-1])

    async def all_running() -> bool:
        statuses = [await runtime.status(r) for r in records]
        return all(s.instances and all(i.state == "Running" for i in s.instances) for s in statuses)

    await wait_until(all_running, within=30, what="every replica running")
    print("READY", json.dumps(replica_processes(data_dir)), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]))
