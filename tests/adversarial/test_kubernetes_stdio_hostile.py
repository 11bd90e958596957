"""Hostile neighbours in a Kubernetes stdio pod (gateway/stdio/pod.py): the server's own processes run
the adapter's code and can write to the shared volume. They can already signal and read each other
(one user, one container), but must not take over a session's FIFO or make the spawner run anything."""

from __future__ import annotations

import os
import select
import subprocess
import threading
from pathlib import Path

import pytest

from gateway.stdio.bridge import ChildGone
from gateway.stdio.pod import STDIO_DIR, FifoChild, FifoSpawner, setup_command, spawner_command

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="needs busybox-static (scripts/test.sh)")


def in_volume(argv: list[str], volume: Path) -> list[str]:
    return [str(volume) + a[len(STDIO_DIR) :] if a.startswith(STDIO_DIR) else a for a in argv]


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """The pod's emptyDir after its setup init container ran."""
    subprocess.run(in_volume(setup_command(), tmp_path), check=True)
    return tmp_path


def swapper(volume: Path, held: list[int]) -> None:
    """Read ``start <id>`` from ctl first, then put its own FIFO where the session's stdin was."""
    with open(volume / "s" / "ctl", "rb", buffering=0) as ctl:
        sid = ctl.readline().split()[1].decode()
    stdin = volume / "s" / f"{sid}.in"
    stdin.unlink()
    os.mkfifo(stdin)
    held.append(os.open(stdin, os.O_RDONLY | os.O_NONBLOCK))  # a reader: the bridge's open succeeds


async def test_a_session_fifo_swapped_by_a_neighbour_is_never_opened_by_the_bridge(volume: Path) -> None:
    held: list[int] = []
    thread = threading.Thread(target=swapper, args=(volume, held), daemon=True)
    thread.start()
    spawner = FifoSpawner(volume, start_timeout=1)
    try:
        # The bridge writes to the FIFO it made (pinned), which nobody reads: the start stalls and fails.
        with pytest.raises(ChildGone, match="did not open"):
            await FifoChild(spawner).start()
        thread.join(5)
        assert held, "the neighbour did swap the FIFO"
        # POLLHUP on a FIFO's reader means a writer came and went: the bridge never opened the swapped one.
        poller = select.poll()
        poller.register(held[0], select.POLLIN | select.POLLHUP)
        assert poller.poll(0) == []
    finally:
        spawner.close()
        for fd in held:
            os.close(fd)


def test_a_forged_control_line_runs_nothing(volume: Path) -> None:
    """Ids are hex: anything else is ignored before the spawner's ``eval`` sees it."""
    marker = volume / "pwned"
    argv = [*in_volume(spawner_command(), volume), "/bin/cat"]
    spawner = subprocess.Popen(argv, stderr=subprocess.PIPE, start_new_session=True)
    killer = threading.Timer(20, spawner.kill)  # never hang the suite
    killer.start()
    try:
        assert spawner.stderr is not None
        assert b"waiting for sessions" in spawner.stderr.readline()
        with open(volume / "s" / "ctl", "wb", buffering=0) as ctl:
            for line in (f"kill x;touch${{IFS}}{marker}", f"term $(touch {marker})", f"start ../../{marker.name}"):
                ctl.write(line.encode() + b"\n")
        ignored = [spawner.stderr.readline() for _ in range(3)]
    finally:
        killer.cancel()
        spawner.kill()
        spawner.wait()
    assert all(b"ignored control line" in line for line in ignored), ignored
    assert not marker.exists()
