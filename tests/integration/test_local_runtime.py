"""The local runtime with real replica processes (the example MCP server and small test images)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import sys
import tempfile
import time
from hashlib import sha256
from pathlib import Path

import httpx
import pytest

from gateway.app import local_runtime_config
from gateway.errors import RuntimeUnavailable
from gateway.runtime import InstanceNotFound
from gateway.runtime._local_catalog import ImageCatalog, ImageEntry
from gateway.runtime._local_isolation import bwrap_works
from gateway.runtime.base import accepting
from gateway.runtime.local import LocalRuntime
from gateway.settings import Settings
from tests.fixtures.local_runtime import (
    RuntimeFactory,
    call_tool,
    pid_alive,
    record,
    replica_processes,
    wait_until,
    write_catalog,
)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BWRAP_WORKS = bwrap_works() or bool(os.environ.get("CI"))


def pids_of(data_dir: Path) -> dict[str, int]:
    """MCP_REPLICA_ID → pid of every live replica process."""
    return {name: pid for pid, name in replica_processes(data_dir).items()}


async def test_three_replicas_ready_then_scale_down_to_zero_and_remove_leave_no_process(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    runtime = await make_runtime()
    data = tmp_path / "data"
    changed: list[str] = []
    runtime.add_listener(changed.append)

    started = time.monotonic()
    await runtime.apply(record("demo", 3))
    await wait_until(lambda: len(runtime.endpoints("demo")) == 3, what="3 ready replicas")
    ready_after = time.monotonic() - started
    assert ready_after < 20, f"3 replicas took {ready_after:.1f}s"  # about 3 s on an idle 2-CPU machine

    endpoints = runtime.endpoints("demo")
    assert [e.replica for e in endpoints] == ["demo-0", "demo-1", "demo-2"]
    assert len({e.url for e in endpoints}) == 3
    assert all(e.url.startswith("http://127.0.0.1:") for e in endpoints)
    assert await call_tool(endpoints[1].url, "whoami") == "demo-1"
    assert "demo" in changed
    assert await runtime.deployed() == {"demo": 1}

    status = await runtime.status(record("demo", 3))
    assert (status.observed_generation, status.desired, status.ready, status.updated) == (1, 3, 3, 3)
    assert not status.progressing and not status.issues
    assert [(i.name, i.ready, i.state) for i in status.instances] == [
        ("demo-0", True, "Running"),
        ("demo-1", True, "Running"),
        ("demo-2", True, "Running"),
    ]

    log1 = await runtime.logs("demo", 1, 100)
    assert "demo-1 starting mcp-example:1.0.0 generation 1" in log1
    assert "demo-0" not in log1
    assert (data / "logs" / "demo-1.log").is_file()
    with pytest.raises(InstanceNotFound):
        await runtime.logs("demo", 3, 10)

    # Scaling is not a spec change: the surviving replica keeps its process.
    pids = pids_of(data)
    assert set(pids) == {"demo-0", "demo-1", "demo-2"}
    await runtime.apply(record("demo", 1, generation=2))
    assert pids_of(data) == {"demo-0": pids["demo-0"]}
    assert [e.replica for e in runtime.endpoints("demo")] == ["demo-0"]
    assert not pid_alive(pids["demo-1"]) and not pid_alive(pids["demo-2"])
    status = await runtime.status(record("demo", 1, generation=2))
    assert (status.observed_generation, status.desired, status.ready, status.updated) == (2, 1, 1, 1)
    assert status.instances[0].generation == 2

    await runtime.apply(record("demo", 0, generation=3))
    assert pids_of(data) == {}
    assert runtime.endpoints("demo") == ()
    status = await runtime.status(record("demo", 0, generation=3))
    assert (status.desired, status.ready, status.instances, status.progressing) == (0, 0, (), False)
    assert await runtime.deployed() == {"demo": 3}

    await runtime.apply(record("demo", 1, generation=4))
    await wait_until(lambda: runtime.endpoints("demo"), what="a replica again")
    pid = pids_of(data)["demo-0"]
    await runtime.remove("demo")
    assert not pid_alive(pid)
    assert pids_of(data) == {}
    assert await runtime.deployed() == {}
    assert runtime.endpoints("demo") == ()
    assert not (data / "logs" / "demo-0.log").exists()
    await runtime.remove("demo")  # idempotent


async def test_env_change_rolls_replica_and_removed_variable_is_gone(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCPGW_SESSION_KEYS", "must-not-leak")
    runtime = await make_runtime()
    seen: list[tuple[str, ...]] = []
    runtime.add_listener(lambda name: seen.append(tuple(e.uid for e in runtime.endpoints(name))))

    await runtime.apply(record("envy", 1, env={"KEEP": "1", "DROP": "bye"}))
    [old] = await wait_until(lambda: runtime.endpoints("envy"), what="first replica")
    assert await call_tool(old.url, "get_env", {"name": "KEEP"}) == "1"
    assert await call_tool(old.url, "get_env", {"name": "DROP"}) == "bye"
    assert await call_tool(old.url, "get_env", {"name": "MCPGW_SESSION_KEYS"}) is None
    assert await call_tool(old.url, "get_env", {"name": "PORT"}) == old.url.rsplit(":", 1)[1]

    await runtime.apply(record("envy", 1, env={"KEEP": "2"}, generation=2))
    rolling = await runtime.status(record("envy", 1, env={"KEEP": "2"}, generation=2))
    assert rolling.progressing and rolling.ready == 1
    [new] = await wait_until(lambda: [e for e in runtime.endpoints("envy") if e.uid != old.uid], what="the replacement")
    assert new.replica == "envy-0" and new.url != old.url
    assert await call_tool(new.url, "get_env", {"name": "KEEP"}) == "2"
    assert await call_tool(new.url, "get_env", {"name": "DROP"}) is None

    done = await wait_until(lambda: runtime.status(record("envy", 1, generation=2)), what="rollout finished")
    assert not done.progressing and (done.ready, done.updated) == (1, 1)
    # Surge: the adapter was never without a ready endpoint while rolling.
    assert () not in seen
    await wait_until(lambda: _refused(old.url), what="the old process to stop")


def _refused(url: str) -> bool:
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


async def test_killed_replica_leaves_endpoints_at_once_and_restarts(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    runtime = await make_runtime()
    await runtime.apply(record("phoenix", 1))
    [first] = await wait_until(lambda: runtime.endpoints("phoenix"), what="replica ready")
    os.kill(pids_of(tmp_path / "data")["phoenix-0"], signal.SIGKILL)
    await wait_until(lambda: runtime.endpoints("phoenix") == (), within=1, what="endpoint removed")
    [second] = await wait_until(lambda: runtime.endpoints("phoenix"), what="restarted replica")
    assert second.replica == first.replica and second.uid != first.uid
    status = await runtime.status(record("phoenix", 1))
    assert status.instances[0].restarts == 1 and status.instances[0].state == "Running"
    assert "killed by SIGKILL" in await runtime.logs("phoenix", 0, 20)


async def test_crashing_replica_restarts_with_backoff_and_reports_crash_loop(make_runtime: RuntimeFactory) -> None:
    runtime = await make_runtime(local_restart_backoff_max=1.0)
    crasher = record("crashy", 1, image=("crasher", "1"))
    started = time.monotonic()
    await runtime.apply(crasher)

    async def looping() -> object:
        status = await runtime.status(crasher)
        return status if status.instances[0].restarts >= 3 else None

    status = await wait_until(looping, within=10, what="3 restarts")
    # The backoff doubles from 0.5 s and is capped at 1 s: the third crash comes after >= 1.5 s.
    assert time.monotonic() - started >= 1.4
    instance = status.instances[0]
    assert instance.state in ("CrashLoopBackOff", "Starting") and not instance.ready
    assert status.ready == 0 and runtime.endpoints("crashy") == ()
    crash_issue = await wait_until(
        lambda: _issue(runtime, crasher, "CrashLoopBackOff"), within=5, what="CrashLoopBackOff issue"
    )
    assert "exited with code 3" in crash_issue.message
    logs = await runtime.logs("crashy", 0, 200)
    assert logs.count("boom") >= 3 and "exited with code 3" in logs
    assert sum("crashy-0 starting" in line for line in logs.splitlines()) >= 3


async def _issue(runtime: LocalRuntime, rec: object, reason: str) -> object:
    from gateway.models import AdapterRecord

    assert isinstance(rec, AdapterRecord)
    status = await runtime.status(rec)
    return next((i for i in status.issues if i.reason == reason), None)


async def test_unknown_image_reports_image_not_found_and_counts_as_applied(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    runtime = await make_runtime()
    ghost = record("ghost", 2, image=("no-such-image", "9.9"), generation=5)
    await runtime.apply(ghost)
    status = await runtime.status(ghost)
    assert [i.reason for i in status.issues] == ["ImageNotFound"]
    assert "no-such-image:9.9" in status.issues[0].message
    assert (status.observed_generation, status.desired, status.ready, status.updated) == (5, 2, 0, 0)
    assert [i.state for i in status.instances] == ["Pending", "Pending"]
    assert await runtime.deployed() == {"ghost": 5}
    assert runtime.endpoints("ghost") == ()
    assert pids_of(tmp_path / "data") == {}
    assert await runtime.logs("ghost", 1, 10) == ""


async def test_check_image_names_unknown_images_on_leader_and_follower(
    make_runtime: RuntimeFactory, test_catalog: Path
) -> None:
    # issue 17: the control plane asks before it stores an adapter (422 naming imageName); a follower
    # (a second gateway on the same data dir, which runs nothing) answers from the same catalog files.
    leader = await make_runtime()
    follower = await make_runtime()
    assert (leader.role, follower.role) == ("leader", "follower")
    for runtime in (leader, follower):
        assert runtime.check_image("mcp-example", "1.0.0") is None  # built in
        assert runtime.check_image("sleeper", "1") is None  # the user catalog
        problem = runtime.check_image("no-such-image", "9.9")
        assert problem is not None and "no-such-image:9.9" in problem and str(test_catalog) in problem
        assert "mcp-example:1.0.0" in problem and "MCPGW_IMAGE_CATALOG" in problem
    # a catalog edited after start is read again: the new entry is known at once
    late = '\n["late:2"]\ncommand = ["true"]\n'
    await asyncio.to_thread(lambda: test_catalog.write_text(test_catalog.read_text() + late))
    assert follower.check_image("late", "2") is None and leader.check_image("late", "2") is None


async def test_replica_not_ready_in_time_is_killed_and_restarted(make_runtime: RuntimeFactory) -> None:
    runtime = await make_runtime(local_ready_timeout=0.5, local_restart_backoff_max=0.5)
    sleeper = record("sleepy", 1, image=("sleeper", "1"))
    await runtime.apply(sleeper)

    async def restarted() -> object:
        status = await runtime.status(sleeper)
        return status if status.instances[0].restarts >= 2 else None

    status = await wait_until(restarted, within=10, what="2 restarts after readiness timeouts")
    assert "not ready within 0.5s" in status.instances[0].message or any(
        "not ready within 0.5s" in i.message for i in status.issues
    )
    assert runtime.endpoints("sleepy") == ()
    assert "killed by SIGKILL" in await runtime.logs("sleepy", 0, 20)


async def test_port_placeholder_and_tcp_readiness(make_runtime: RuntimeFactory, test_catalog: Path) -> None:
    (test_catalog.parent / "hello.txt").write_text("hello from the catalog dir")
    runtime = await make_runtime()
    await runtime.apply(record("files", 2, image=("http-server", "1")))
    endpoints = await wait_until(lambda: len(runtime.endpoints("files")) == 2 and runtime.endpoints("files"))
    async with httpx.AsyncClient() as client:
        for endpoint in endpoints:
            response = await client.get(endpoint.url + "/hello.txt")
            assert response.text == "hello from the catalog dir"


def test_user_catalog_overrides_builtin_and_expands_placeholders(tmp_path: Path) -> None:
    user = write_catalog(
        tmp_path / "mine.toml",
        {"mcp-example:1.0.0": {"command": ["{python}", "mine.py", "--port", "{port}"], "env": {"DIR": "{repo}"}}},
    )
    catalog = ImageCatalog(user)
    entry = catalog.lookup("mcp-example:1.0.0")
    assert entry is not None
    assert entry.command == (sys.executable, "mine.py", "--port", "{port}")  # {port} is per process
    assert dict(entry.env) == {"DIR": str(REPO)}
    assert entry.cwd == str(tmp_path) and entry.ready_path is None
    assert ImageCatalog(None).lookup("mcp-example:1.0.0") == _builtin_example()
    assert catalog.lookup("nope:1") is None


def _builtin_example() -> ImageEntry:
    return ImageEntry(
        command=(sys.executable, f"{REPO}/examples/mcp-example/server.py"),
        env=(("PYTHONUNBUFFERED", "1"),),
        ready_path="/healthz",
        cwd=str(REPO),
    )


async def test_update_to_unknown_image_keeps_ready_replica_serving(make_runtime: RuntimeFactory) -> None:
    runtime = await make_runtime()
    await runtime.apply(record("steady", 1, image=("http-server", "1")))
    [serving] = await wait_until(lambda: runtime.endpoints("steady"), what="replica ready")

    await runtime.apply(record("steady", 1, image=("typo-server", "1"), generation=2))
    status = await runtime.status(record("steady", 1, image=("typo-server", "1"), generation=2))
    assert [i.reason for i in status.issues] == ["ImageNotFound"]
    assert (status.observed_generation, status.ready, status.updated) == (2, 1, 0)
    assert runtime.endpoints("steady") == (serving,)

    # Back to the known image: the same process stays, the issue goes.
    await runtime.apply(record("steady", 1, image=("http-server", "1"), generation=3))
    status = await runtime.status(record("steady", 1, image=("http-server", "1"), generation=3))
    assert not status.issues and not status.progressing and (status.ready, status.updated) == (1, 1)
    assert runtime.endpoints("steady") == (serving,)


async def test_ping_needs_start_and_close_is_idempotent(tmp_path: Path) -> None:
    runtime = LocalRuntime(local_runtime_config(Settings(data_dir=tmp_path / "data")))
    with pytest.raises(RuntimeUnavailable, match="local runtime"):
        await runtime.ping()
    with pytest.raises(RuntimeUnavailable):
        await runtime.apply(record())
    await runtime.start()
    await runtime.ping()
    assert runtime.role == "leader"
    await runtime.close()
    await runtime.close()
    with pytest.raises(RuntimeUnavailable):
        await runtime.ping()


async def test_broken_user_catalog_stops_start_with_its_path(tmp_path: Path) -> None:
    catalog = tmp_path / "bad.toml"
    catalog.write_text('["x:1"]\ncommand = "not a list"\n')
    runtime = LocalRuntime(local_runtime_config(Settings(data_dir=tmp_path / "data", image_catalog=catalog)))
    with pytest.raises(RuntimeUnavailable, match=r"bad\.toml.*'x:1'.*command"):
        await runtime.start()


async def test_sigkilled_gateway_leaves_nothing_after_restart(
    make_runtime: RuntimeFactory, tmp_path: Path, test_catalog: Path
) -> None:
    """Without isolation: PDEATHSIG takes the children, the owner marker finds the escaped grandchild."""
    data = tmp_path / "data"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fixtures.local_runtime",
        str(data),
        str(test_catalog),
        "ex:example:1",
        "esc:escaper:1",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        # Not isolated: this pins PDEATHSIG and the marker, which no sandbox helps with.
        env={**os.environ, "MCPGW_LOCAL_SANDBOX": "off", "MCPGW_LOCAL_REPLICA_USER": ""},
    )
    try:
        assert child.stdout is not None
        line = (await asyncio.wait_for(child.stdout.readline(), timeout=40)).decode()
        assert line.startswith("READY"), line
        before = {int(pid): name for pid, name in json.loads(line.split(" ", 1)[1]).items()}
        assert sorted(before.values()) == ["esc-0", "esc-0", "ex-0"]  # the escaper's server and its sleep
        assert sorted(_command(pid) for pid in before) == ["python", "python", "sleep"]
    finally:
        child.kill()  # SIGKILL: the runtime gets no chance to clean up
        await child.wait()
    # PDEATHSIG took the direct children with the gateway; only the escaped grandchild remains.
    await wait_until(
        lambda: [_command(pid) for pid in replica_processes(data)] == ["sleep"], within=5, what="children gone"
    )
    survivors = list(replica_processes(data))

    work_root = (
        Path(tempfile.gettempdir()) / f"mcp-gateway-replicas-{sha256(str(data.resolve()).encode()).hexdigest()[:16]}"
    )
    assert (work_root / "esc-0").is_dir()  # the killed gateway's replicas' working dirs

    runtime = await make_runtime(data)
    assert runtime.role == "leader"

    def gone(pid: int) -> bool:
        return not pid_alive(pid)

    for pid in survivors:
        await wait_until(functools.partial(gone, pid), within=5, what=f"leftover {pid} killed")
    assert replica_processes(data) == {}
    assert not work_root.exists()


@pytest.mark.skipif(not BWRAP_WORKS, reason="bubblewrap cannot create a sandbox on this machine")
async def test_sigkilled_gateway_leaves_nothing_in_the_sandbox_either(tmp_path: Path, test_catalog: Path) -> None:
    """With the sandbox the escaped grandchild lives in the replica's pid namespace: it dies with it."""
    data = tmp_path / "data"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fixtures.local_runtime",
        str(data),
        str(test_catalog),
        "esc:escaper:1",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "MCPGW_LOCAL_SANDBOX": "bwrap"},
    )
    try:
        assert child.stdout is not None
        line = (await asyncio.wait_for(child.stdout.readline(), timeout=40)).decode()
        assert line.startswith("READY"), line
        before = {int(pid) for pid in json.loads(line.split(" ", 1)[1])}
        assert {_command(pid) for pid in before} >= {"bwrap", "python", "sleep"}
    finally:
        child.kill()
        await child.wait()
    await wait_until(lambda: not any(pid_alive(pid) for pid in before), within=5, what="the whole sandbox gone")
    assert replica_processes(data) == {}


def _command(pid: int) -> str:
    name = Path(f"/proc/{pid}/comm").read_text().strip()
    return "python" if name.startswith("python") else name


async def test_follower_mirrors_leader_and_takes_over_when_it_closes(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    leader = await make_runtime()
    follower = await make_runtime()
    assert (leader.role, follower.role) == ("leader", "follower")
    heard: list[str] = []
    follower.add_listener(heard.append)
    took_over: list[bool] = []
    follower.on_leadership(lambda: took_over.append(True))

    await leader.apply(record("shared", 1))
    await follower.apply(record("shared", 5))  # a follower runs nothing
    await wait_until(lambda: leader.endpoints("shared"), what="leader's replica")
    await wait_until(lambda: follower.endpoints("shared") == leader.endpoints("shared"), within=3, what="mirror")
    assert "shared" in heard
    assert await follower.deployed() == {"shared": 1}
    status = await follower.status(record("shared", 1))
    assert (status.ready, status.desired) == (1, 1)
    assert "shared-0 starting" in await follower.logs("shared", 0, 10)
    assert list(pids_of(tmp_path / "data")) == ["shared-0"]

    await leader.close()
    await wait_until(lambda: follower.role == "leader", within=5, what="takeover")
    assert took_over == [True]
    assert follower.endpoints("shared") == ()
    assert await follower.deployed() == {}
    await follower.apply(record("shared", 1))
    await wait_until(lambda: follower.endpoints("shared"), what="replica run by the new leader")


def test_runs_under_uvloop(tmp_path: Path) -> None:
    import uvloop

    data = tmp_path / "data"

    async def scenario() -> tuple[str, int]:
        runtime = LocalRuntime(local_runtime_config(Settings(data_dir=data)))
        await runtime.start()
        try:
            await runtime.apply(record("loopy", 1))
            [endpoint] = await wait_until(lambda: runtime.endpoints("loopy"), what="replica under uvloop")
            pid = pids_of(data)["loopy-0"]
            return await call_tool(endpoint.url, "whoami"), pid
        finally:
            await runtime.close()

    whoami, pid = uvloop.run(scenario())
    assert whoami == "loopy-0"
    assert not pid_alive(pid)
    assert replica_processes(data) == {}


async def test_scaled_away_replica_drains_until_its_sessions_end_or_the_timeout(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    """Issue 13: a scaled-away replica takes nothing new but stays for its pinned sessions."""
    pinned: dict[str, int] = {}

    async def counter(adapter: str, uid: str) -> int:
        assert adapter == "dr"
        return pinned.get(uid, 0)

    runtime = await make_runtime(replica_drain_timeout=4)
    runtime.set_session_counter(counter)
    await runtime.apply(record("dr", 3))
    endpoints = await wait_until(lambda: len(runtime.endpoints("dr")) == 3 and runtime.endpoints("dr"))
    by_name = {e.replica: e for e in endpoints}
    pinned[by_name["dr-1"].uid] = 2  # dr-1 has sessions; dr-2 has none

    await runtime.apply(record("dr", 1, generation=2))
    # dr-2 (no session) stops at the first check; dr-1 keeps serving its sessions, flagged draining.
    await wait_until(lambda: {e.replica for e in runtime.endpoints("dr")} == {"dr-0", "dr-1"}, what="dr-2 gone")
    assert [(e.replica, e.draining) for e in runtime.endpoints("dr")] == [("dr-0", False), ("dr-1", True)]
    assert [e.replica for e in accepting(runtime.endpoints("dr"))] == ["dr-0"]
    status = await runtime.status(record("dr", 1, generation=2))
    assert [(i.name, i.state) for i in status.instances] == [("dr-0", "Running"), ("dr-1", "Draining")]
    assert await call_tool(by_name["dr-1"].url, "whoami") == "dr-1"  # still serving
    assert status.ready == 1
    # Its sessions never end: it stops at the drain timeout, and its log goes with it.
    started = time.monotonic()
    await wait_until(lambda: len(runtime.endpoints("dr")) == 1, within=10, what="drain timeout")
    assert time.monotonic() - started < 5
    assert set(pids_of(tmp_path / "data")) == {"dr-0"}
    await wait_until(lambda: not (tmp_path / "data" / "logs" / "dr-1.log").exists(), what="log of dr-1 removed")
