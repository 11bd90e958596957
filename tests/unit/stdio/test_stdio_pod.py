"""The Kubernetes stdio pod's wire, without Kubernetes: the setup script, the busybox spawner and the
bridge's FIFO sessions (gateway/stdio/pod.py), as real processes on a directory standing for the
pod's ``emptyDir``. The end-to-end path through the gateway is tests/e2e/test_kubernetes_stdio_e2e.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.runtime._local_process import _process_tree
from gateway.stdio.bridge import ChildGone
from gateway.stdio.pod import STDIO_DIR, FifoChild, FifoSpawner, setup_command, spawner_command

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="needs busybox-static (scripts/test.sh)")

# A program that leaves a grandchild holding its stdout, as npx → node does: only its group's end frees the FIFO.
WITH_GRANDCHILD = ["sh", "-c", "sleep 300 & exec cat"]


def in_volume(argv: list[str], volume: Path) -> list[str]:
    return [str(volume) + a[len(STDIO_DIR) :] if a.startswith(STDIO_DIR) else a for a in argv]


def start_spawner(
    volume: Path, program: list[str], *, env: dict[str, str] | None = None, stderr: int | None = None
) -> subprocess.Popen[bytes]:
    """The server container: the spawner running ``program`` once per session."""
    argv = [*in_volume(spawner_command(), volume), *program]
    return subprocess.Popen(argv, env=env, stderr=stderr, start_new_session=True)


def names(volume: Path) -> list[str]:
    return sorted(p.name for p in volume.iterdir())


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """The emptyDir after the setup init container ran (twice: it must be idempotent)."""
    for _ in range(2):
        subprocess.run(in_volume(setup_command(), tmp_path), check=True)
    assert (tmp_path / "busybox").stat().st_mode & 0o111 and (tmp_path / "s" / "ctl").is_fifo()
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o711
    return tmp_path


@pytest.fixture
def spawner_process(volume: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The server container: the spawner running WITH_GRANDCHILD once per session."""
    proc = start_spawner(volume, WITH_GRANDCHILD)
    yield proc
    for pid in _process_tree(proc.pid):
        os.kill(pid, 9)
    proc.wait()


@pytest.fixture
async def spawner(volume: Path) -> AsyncIterator[FifoSpawner]:
    """The bridge's side of ctl."""
    side = FifoSpawner(volume, start_timeout=10)
    yield side
    side.close()


async def wait_until(predicate: object, limit: float = 10.0) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def sessions_of(proc: subprocess.Popen[bytes]) -> set[int]:
    """The spawner's descendants (session processes and their children)."""
    return _process_tree(proc.pid) - {proc.pid}


async def test_a_session_runs_under_the_spawner_and_ends_with_its_whole_group(
    spawner_process: subprocess.Popen[bytes], spawner: FifoSpawner, volume: Path
) -> None:
    child = FifoChild(spawner)
    await child.start()
    await child.send({"jsonrpc": "2.0", "method": "notifications/hello"})
    assert await asyncio.wait_for(child.outbound.get(), 10) == b'{"jsonrpc":"2.0","method":"notifications/hello"}'
    assert len(sessions_of(spawner_process)) >= 2  # cat and its sleep
    assert names(volume / "s") == ["ctl"]  # the FIFOs' names are gone once open

    await child.close()  # stdin EOF ends cat; the sleep keeps stdout open until its group is signalled
    assert child.exited.is_set()
    await wait_until(lambda: not sessions_of(spawner_process))


async def test_the_bridge_going_away_ends_every_session(
    spawner_process: subprocess.Popen[bytes], spawner: FifoSpawner
) -> None:
    children = [FifoChild(spawner) for _ in range(2)]
    for child in children:
        await child.start()
    await wait_until(lambda: len(sessions_of(spawner_process)) >= 4)

    spawner.close()  # what a killed bridge container's closed ctl looks like to the spawner
    await wait_until(lambda: not sessions_of(spawner_process))
    for child in children:
        await asyncio.wait_for(child.exited.wait(), 5)
    assert spawner_process.poll() is None  # it waits for the next bridge


async def test_without_a_spawner_a_session_fails_in_time_naming_the_server_container(volume: Path) -> None:
    lonely = FifoSpawner(volume, start_timeout=0.3)
    child = FifoChild(lonely)
    with pytest.raises(ChildGone, match="server container"):
        await child.start()
    assert child.exited.is_set()
    assert names(volume / "s") == ["ctl"]


async def test_a_program_that_cannot_start_is_a_session_that_exited(volume: Path, spawner: FifoSpawner) -> None:
    proc = start_spawner(volume, ["/nonexistent/program"], stderr=subprocess.PIPE)
    try:
        child = FifoChild(spawner)
        await child.start()
        await asyncio.wait_for(child.exited.wait(), 10)
        with pytest.raises(ChildGone):
            await child.request({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        await child.close()
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert b"/nonexistent/program" in err  # the reason is in the server container's log


async def test_the_spawner_needs_nothing_from_the_image(volume: Path, spawner: FifoSpawner) -> None:
    # An empty PATH, as in a distroless image: only the copied busybox and the program itself.
    proc = start_spawner(volume, ["/bin/cat"], env={"PATH": ""})
    try:
        child = FifoChild(spawner)
        await child.start()
        await child.send({"jsonrpc": "2.0", "method": "x"})
        assert await asyncio.wait_for(child.outbound.get(), 10) == b'{"jsonrpc":"2.0","method":"x"}'
        await child.close()
        await wait_until(lambda: not sessions_of(proc))
    finally:
        proc.kill()
        proc.wait()
