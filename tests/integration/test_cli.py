"""The ``mcp-gateway`` client commands against a real gateway, run exactly as a user runs them.

Each command is a ``python -m gateway.cli ...`` process pointed at the gateway with ``MCPGW_URL``;
``--json`` output is parsed, exit statuses checked (0 done, 1 the gateway said no, 2 usage).
``servers`` and ``tools``/``call`` on a virtual server are in tests/integration/test_cli_servers.py; ``import``
is not tested yet (the ``serverJson`` field of POST /adapters is being built on another branch). The SSE endpoint behind
``logs --follow`` is checked at the HTTP level too, and its two building blocks (the file follower
and the SSE framing with keep-alives) in-process with short intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.cli import main
from gateway.control.routes import log_events
from gateway.runtime._local_process import follow_lines
from tests.fixtures.gateway import (
    REPO,
    GatewayProcess,
    example_adapter,
    replica_pids,
    start_gateway,
    wait_for,
    wait_ready,
)

CLI_TIMEOUT = 60


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway (dev auth, local runtime) with one ready replica of the example adapter."""
    with start_gateway(tmp_path_factory.mktemp("cli") / "data") as gateway:
        with gateway.client() as client:
            assert client.post("/adapters", json=example_adapter()).status_code == 201
            wait_ready(client, "mcp-example", 1)
        yield gateway


def cli_env(gw: GatewayProcess | None, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
    env["XDG_CACHE_HOME"] = str(home)  # no `login` profile from the person running the tests
    if gw is not None:
        env["MCPGW_URL"] = gw.url
    return env


def cli(gw: GatewayProcess | None, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run ``mcp-gateway *args`` in this process (the entry point's ``main``, as the console script does).

    In-process because a Python start plus imports costs 1-2 s on the loaded test machine and this
    file runs some thirty commands; ``test_the_console_script_runs_as_a_process`` and the follow
    test run real ``python -m gateway.cli`` processes.
    """
    saved = dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(cli_env(gw, home))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["mcp-gateway", *args], code, out.getvalue(), err.getvalue())


def cli_process(gw: GatewayProcess | None, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gateway.cli *args`` as a process."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=REPO,
        env=cli_env(gw, home),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- usage and errors ----------------------------------------------------------------------------


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert cli(None, "adapters", home=tmp_path).returncode == 2  # no action
    assert cli(None, "adapters", "get", home=tmp_path).returncode == 2  # no name
    result = cli(None, "adapters", "create", "x", "--replicas", "two", home=tmp_path)
    assert result.returncode == 2 and "--replicas" in result.stderr


def test_unknown_adapter_is_404_exit_1_with_the_problem_in_json(gw: GatewayProcess, tmp_path: Path) -> None:
    result = cli(gw, "adapters", "get", "no-such-adapter", home=tmp_path)
    assert result.returncode == 1
    assert "404" in result.stderr and "no-such-adapter" in result.stderr
    result = cli(gw, "adapters", "status", "no-such-adapter", "--json", home=tmp_path)
    assert result.returncode == 1
    error = json.loads(result.stderr)["error"]
    assert error["status"] == 404 and "no-such-adapter" in error["detail"]


def test_invalid_input_prints_the_field_the_gateway_names(gw: GatewayProcess, tmp_path: Path) -> None:
    result = cli(gw, "adapters", "create", "Bad_Name", "--image", "mcp-example:1.0.0", home=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: 400 ") and "(field: name)" in result.stderr
    result = cli(gw, "adapters", "create", "env-bad", "--image", "mcp-example:1.0.0", "--env", "1X=a", home=tmp_path)
    assert result.returncode == 1 and "field: environmentVariables" in result.stderr, result.stderr


def test_unreachable_gateway_exits_1_naming_the_url(tmp_path: Path) -> None:
    result = cli(None, "adapters", "list", "--url", "http://127.0.0.1:9", home=tmp_path)
    assert result.returncode == 1 and "cannot reach the gateway at http://127.0.0.1:9" in result.stderr


def test_the_console_script_runs_as_a_process(gw: GatewayProcess, tmp_path: Path) -> None:
    listed = ok_json(cli_process(gw, "adapters", "list", "--json", home=tmp_path))
    assert isinstance(listed, list) and "mcp-example" in {a["name"] for a in listed}
    assert cli_process(gw, "adapters", "get", "no-such-adapter", home=tmp_path).returncode == 1
    assert cli_process(gw, "adapters", home=tmp_path).returncode == 2


# --- adapters ------------------------------------------------------------------------------------


def test_adapter_lifecycle_create_list_get_update_status_delete(gw: GatewayProcess, tmp_path: Path) -> None:
    created = ok_json(
        cli(
            gw,
            *("adapters", "create", "scratch", "--image", "mcp-example:1.0.0", "--replicas", "0"),
            *("--env", "A=1", "--env", "B=2", "--description", "from the cli", "--json"),
            home=tmp_path,
        )
    )
    assert isinstance(created, dict)
    assert created["environmentVariables"] == {"A": "1", "B": "2"} and created["replicaCount"] == 0
    listed = ok_json(cli(gw, "adapters", "list", "--json", home=tmp_path))
    assert isinstance(listed, list) and {"mcp-example", "scratch"} <= {a["name"] for a in listed}
    people = cli(gw, "adapters", "list", home=tmp_path)
    assert people.returncode == 0 and people.stdout.startswith("NAME ") and "mcp-example:1.0.0" in people.stdout
    got = ok_json(cli(gw, "adapters", "get", "scratch", "--json", home=tmp_path))
    assert isinstance(got, dict) and got["description"] == "from the cli"
    updated = ok_json(
        cli(gw, "adapters", "update", "scratch", "--unset-env", "A", "--env", "C=3", "--json", home=tmp_path)
    )
    assert isinstance(updated, dict)
    assert updated["environmentVariables"] == {"B": "2", "C": "3"} and updated["description"] == "from the cli"
    assert updated["generation"] == created["generation"] + 1
    status = ok_json(cli(gw, "adapters", "status", "scratch", "--json", home=tmp_path))
    assert isinstance(status, dict) and status["desiredReplicas"] == 0
    assert {c["type"] for c in status["conditions"]} == {"Accepted", "Progressing", "Ready", "Degraded"}
    assert cli(gw, "adapters", "delete", "scratch", home=tmp_path).returncode == 0
    assert cli(gw, "adapters", "get", "scratch", home=tmp_path).returncode == 1


def test_list_names_the_package_a_package_adapter_runs(gw: GatewayProcess, tmp_path: Path) -> None:
    # Issue 17: package and server.json adapters have no imageName; the list showed ":" for them.
    package = {"registry": "pypi", "name": "mcp-server-time", "version": "2026.10.19"}
    body = {"name": "pkg-listed", "transport": "stdio", "package": package, "replicaCount": 0}
    with gw.client() as api:
        assert api.post("/adapters", json=body).status_code == 201
    try:
        people = cli(gw, "adapters", "list", home=tmp_path)
        row = next(line for line in people.stdout.splitlines() if line.startswith("pkg-listed "))
        assert "pypi:mcp-server-time==2026.10.19" in row, people.stdout
        assert "mcp-example:1.0.0" in people.stdout
    finally:
        with gw.client() as api:
            api.delete("/adapters/pkg-listed")


def test_status_table_shows_conditions_and_replicas(gw: GatewayProcess, tmp_path: Path) -> None:
    result = cli(gw, "adapters", "status", "mcp-example", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ready 1/1" in result.stdout and "AllReplicasReady" in result.stdout and "mcp-example-0" in result.stdout


def test_another_user_cannot_read_and_gets_403(gw: GatewayProcess, tmp_path: Path) -> None:
    result = cli(gw, "adapters", "get", "mcp-example", "--user", "mallory", home=tmp_path)
    assert result.returncode == 1 and "403" in result.stderr
    result = cli(gw, "adapters", "logs", "mcp-example", "--follow", "--user", "mallory", home=tmp_path)
    assert result.returncode == 1 and "403" in result.stderr


# --- tools and call ------------------------------------------------------------------------------


def test_tools_lists_the_example_tools(gw: GatewayProcess, tmp_path: Path) -> None:
    listed = ok_json(cli(gw, "tools", "mcp-example", "--json", home=tmp_path))
    assert isinstance(listed, list) and {"add", "echo", "whoami", "get_env"} <= {t["name"] for t in listed}
    people = cli(gw, "tools", "mcp-example", home=tmp_path)
    assert people.returncode == 0 and "a:number b:number" in people.stdout


def test_call_add_prints_5(gw: GatewayProcess, tmp_path: Path) -> None:
    result = cli(gw, "call", "mcp-example", "add", "a=2", "b=3", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "5"


def test_call_keeps_text_for_string_arguments_and_refuses_wrong_types(gw: GatewayProcess, tmp_path: Path) -> None:
    reply = ok_json(cli(gw, "call", "mcp-example", "echo", "text=5", "--json", home=tmp_path))
    assert isinstance(reply, dict) and reply["content"][0]["text"] == "5"
    result = cli(gw, "call", "mcp-example", "add", "a=two", "b=3", home=tmp_path)
    assert result.returncode == 2 and "argument a: expected number" in result.stderr
    result = cli(gw, "call", "mcp-example", "add", "a=1", home=tmp_path)
    assert result.returncode == 2 and "missing argument: b" in result.stderr
    result = cli(gw, "call", "mcp-example", "nope", home=tmp_path)
    assert result.returncode == 2 and "no tool 'nope'" in result.stderr


def test_call_on_an_unknown_adapter_is_404_exit_1(gw: GatewayProcess, tmp_path: Path) -> None:
    result = cli(gw, "call", "nothing-here", "add", "a=1", "b=2", home=tmp_path)
    assert result.returncode == 1 and "404" in result.stderr


# --- logs ----------------------------------------------------------------------------------------


def test_logs_prints_the_tail(gw: GatewayProcess, tmp_path: Path) -> None:
    result = cli(gw, "adapters", "logs", "mcp-example", "--tail", "50", home=tmp_path)
    assert result.returncode == 0 and "mcp-example replica mcp-example-0 serving on" in result.stdout


def test_logs_follow_shows_lines_written_after_it_started_and_ends_with_the_replica(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    with gw.client() as client:
        assert client.post("/adapters", json=example_adapter("follow-me")).status_code == 201
        wait_ready(client, "follow-me", 1)
    follower = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "adapters", "logs", "follow-me", "--follow", "--tail", "1", "--json"],
        cwd=REPO,
        env=cli_env(gw, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(json.loads(x)["line"] for x in follower.stdout or []))
    reader.start()
    try:
        wait_for(lambda: lines, timeout=20, what="the tail line")
        assert len(lines) == 1  # --tail 1
        # The replica writes a new line when it starts again: kill it, the runtime restarts it.
        os.kill(replica_pids(gw.data_dir)["follow-me-0"], signal.SIGKILL)
        wait_for(lambda: any("serving on" in line for line in lines[1:]), timeout=30, what="the restart's line")
        # Deleting the adapter ends the stream (event: end) and the command with status 0.
        with gw.client() as client:
            assert client.delete("/adapters/follow-me").status_code == 204
        assert follower.wait(timeout=30) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        reader.join(timeout=5)


def test_logs_follow_endpoint_is_sse_with_the_same_access_rules(gw: GatewayProcess) -> None:
    with gw.client(user="mallory") as other:
        response = other.get("/adapters/mcp-example/logs", params={"follow": "true"})
        assert response.status_code == 403 and response.headers["content-type"] == "application/problem+json"
    with gw.client(user="reader", roles="mcp.admin") as admin:
        response = admin.get("/adapters/mcp-example/logs", params={"follow": "true", "instance": 5})
        assert response.status_code == 404
        response = admin.get("/adapters/mcp-example/logs", params={"follow": "true", "tail": 0})
        assert response.status_code == 400
        with admin.stream(
            "GET", "/adapters/mcp-example/logs", params={"follow": "true", "tail": 1}, timeout=httpx.Timeout(10)
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            first = next(stream.iter_lines())
            assert first.startswith("data: ") and "mcp-example" in first


# --- the building blocks, in-process -------------------------------------------------------------


def test_follow_lines_reads_on_across_rotation_and_ends_when_not_alive(tmp_path: Path) -> None:
    path = tmp_path / "a-0.log"
    path.write_text("one\ntwo\nthr")
    alive = True

    async def run() -> list[str]:
        seen: list[str] = []
        lines = follow_lines(path, 2, alive=lambda: alive, poll=0.01)

        async def until(count: int) -> None:
            while len(seen) < count:
                seen.append(await anext(lines))

        await asyncio.wait_for(until(1), 5)  # "two"; "thr" is a line still being written
        with path.open("a") as f:
            f.write("ee\n")
        await asyncio.wait_for(until(2), 5)
        path.rename(path.with_name("a-0.log.1"))  # the replica restarts with a large file
        path.write_text("four\n")
        await asyncio.wait_for(until(3), 5)
        nonlocal alive
        alive = False
        seen.extend([line async for line in lines])
        return seen

    assert asyncio.run(run()) == ["two", "three", "four"]


def test_log_events_frame_lines_send_keepalives_and_end(tmp_path: Path) -> None:
    async def slow() -> AsyncIterator[str]:
        yield "first"
        await asyncio.sleep(0.2)
        yield "second\rhalf"

    async def run() -> bytes:
        return b"".join([event.encode() async for event in log_events(slow(), keepalive=0.05)])

    started = time.monotonic()
    wire = asyncio.run(run()).decode()
    assert time.monotonic() - started < 5
    assert wire.startswith("data: first\r\n\r\n")
    assert ": keep-alive\r\n\r\n" in wire
    assert "data: second\r\ndata: half\r\n\r\n" in wire
    assert wire.endswith("event: end\r\ndata: the replica is gone\r\n\r\n")
