"""A stdio image on Kubernetes, unchanged: the bridge in its own container, the server's processes in the image's.

Decisions (2026-11-30, issue 17; the trade-offs are in docs/kubernetes.md, "stdio servers"):

* **Three containers share one ``emptyDir`` at ``STDIO_DIR``.** An init container from the gateway
  image copies a static ``busybox`` there and makes ``s/`` (mode 0711: only the gateway image's user
  may create or remove names in it) with the control FIFO ``s/ctl``. The server container
  (the adapter's stock image, its security context unchanged) runs ``SPAWNER`` with that busybox:
  a shell loop that starts the adapter's ``command``/``args`` once per client session. The bridge
  container (the gateway image) runs ``python -m gateway.stdio.bridge --fifo-dir STDIO_DIR``: the
  HTTP front, exactly the local runtime's bridge, whose server processes are started by the
  spawner instead of by itself. So a Kubernetes stdio replica keeps the local runtime's design:
  **one process per client session**, a shared process for stateless 2026-07-28 requests.
* **Why busybox, why a shell.** The server's processes must run in the server's image (its node,
  its python, its files), so something in that container has to fork them; a stock image may have
  no shell at all (distroless) and surely has no gateway. A statically linked busybox (Debian
  ``busybox-static``, ~2 MB) runs in any Linux image, glibc, musl or none; the spawner uses only
  its shell's built-ins plus ``busybox setsid``. The bridge needs no shared pid namespace: it asks
  the spawner to signal a session's process group.
* **Wire between the containers.** Per session the bridge makes two FIFOs, ``s/<id>.in`` and
  ``s/<id>.out`` (mode 0666: the two containers may run as different users), pins each with an
  ``O_PATH`` descriptor and opens it only through ``/proc/self/fd`` from then on, opens the stdout
  FIFO for reading, and writes ``start <id>`` to ``ctl``. The spawner runs ``busybox setsid
  program args >s/<id>.out <s/<id>.in`` in the background (a new session, so the group can be
  signalled). Once the bridge's open of the stdin FIFO for writing succeeds, both ends are open and
  the names are unlinked. The server's processes run the adapter's code and can read ``ctl`` (they
  share the spawner's user): ``s/`` keeps them from swapping a session's FIFO (and, as root in
  their container, the pin does), so a neighbour can stall a session start but not read another
  session's messages through the bridge; within one pod, sessions are as isolated from each other
  as the local runtime's (processes of one user). The session's process ends like a local one: its stdin closes
  (EOF), then ``term <id>`` (SIGTERM to its group), then ``kill <id>`` (SIGKILL to the group, always,
  for grandchildren; the spawner forgets the id). Its stdout reaching EOF is its exit.
* **No orphans.** The bridge holds ``ctl`` open for writing; when the bridge container stops or
  is killed, the spawner reads EOF and SIGKILLs every session's group, then waits for the next
  bridge. Zombies of the spawner (PID 1 of its container) are reaped at each ``kill``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import stat
import time
from pathlib import Path

from gateway.stdio.bridge import MAX_LINE, STDIN_GRACE, TERM_GRACE, Child, ChildGone

STDIO_DIR = "/mcp-stdio"
"""Where the pod's shared ``emptyDir`` is mounted in all three containers."""
GATEWAY_BUSYBOX = "/bin/busybox"
"""The static busybox in the gateway image (Debian ``busybox-static``; see the Dockerfile)."""
START_TIMEOUT = 30.0
"""Seconds the bridge waits for the spawner to pick up a session (the server container may still be starting)."""

SETUP = (
    f'bb={GATEWAY_BUSYBOX}; $bb cp $bb "$0/.busybox" && $bb mv -f "$0/.busybox" "$0/busybox" '
    '&& $bb mkdir -p -m 711 "$0/s" && { [ -p "$0/s/ctl" ] || $bb mkfifo -m 666 "$0/s/ctl"; }'
)
"""The init container's ``sh -c`` script (``$0`` is ``STDIO_DIR``); idempotent, as init containers may run again."""

SPAWNER = """\
bb="$0/busybox"; live=""
echo "mcp-stdio spawner: waiting for sessions; program: $*" >&2
while :; do
  while read -r verb sid; do
    case "$sid" in ''|*[!0-9a-f]*) echo "mcp-stdio spawner: ignored control line" >&2; continue;; esac
    case "$verb" in
      start) "$bb" setsid "$@" >"$0/s/$sid.out" <"$0/s/$sid.in" & eval "pid_$sid=\\$!"; live="$live $sid" ;;
      term) eval "p=\\${pid_$sid:-}"; [ -n "$p" ] && kill -TERM -- "-$p" 2>/dev/null ;;
      kill) eval "p=\\${pid_$sid:-}"
        if [ -n "$p" ]; then kill -KILL -- "-$p" 2>/dev/null; wait "$p" 2>/dev/null; unset "pid_$sid"; fi
        n=""; for s in $live; do [ "$s" = "$sid" ] || n="$n $s"; done; live="$n" ;;
    esac
  done <"$0/s/ctl"
  for s in $live; do eval "p=\\${pid_$s:-}"; [ -n "$p" ] && kill -KILL -- "-$p" 2>/dev/null; unset "pid_$s"; done
  [ -n "$live" ] && { wait 2>/dev/null; echo "mcp-stdio spawner: the bridge went away; ended its sessions" >&2; }
  live=""
done
"""
"""The server container's ``busybox sh -c`` script: ``$0`` is ``STDIO_DIR``, ``$@`` the adapter's command
and args. Only shell built-ins and ``busybox setsid``; session ids are hex (checked before ``eval``)."""


def spawner_command() -> list[str]:
    """The server container's ``command``; its ``args`` are the adapter's command and args."""
    return [f"{STDIO_DIR}/busybox", "sh", "-c", SPAWNER, STDIO_DIR]


def setup_command() -> list[str]:
    """The init container's ``command``."""
    return [GATEWAY_BUSYBOX, "sh", "-c", SETUP, STDIO_DIR]


class FifoSpawner:
    """The bridge's side of ``ctl``: asks the spawner in the server container to start and signal sessions."""

    def __init__(self, directory: Path, *, start_timeout: float = START_TIMEOUT) -> None:
        self.directory = directory
        self.start_timeout = start_timeout
        self._ctl: int | None = None
        self._lock = asyncio.Lock()

    def paths(self, sid: str) -> tuple[Path, Path]:
        """The FIFOs of session ``sid``: its stdin, its stdout."""
        return self.directory / "s" / f"{sid}.in", self.directory / "s" / f"{sid}.out"

    async def control(self, verb: str, sid: str) -> None:
        """Write ``verb sid`` to ``ctl`` (raise ChildGone when the spawner does not read it in time)."""
        line = f"{verb} {sid}\n".encode()
        async with self._lock:
            for _ in range(2):
                if self._ctl is None:
                    self._ctl = await open_writer(self.directory / "s" / "ctl", self.start_timeout, "the spawner")
                try:
                    os.write(self._ctl, line)  # shorter than PIPE_BUF: one atomic write
                    return
                except OSError as exc:  # EPIPE: the spawner restarted; EAGAIN: it stopped reading
                    os.close(self._ctl)
                    self._ctl = None
                    if exc.errno != errno.EPIPE:
                        raise ChildGone(f"the spawner in the server container does not read {verb}: {exc}") from None
            raise ChildGone("the spawner in the server container went away twice in a row")

    def close(self) -> None:
        """Close ``ctl``: the spawner ends every session still running."""
        if self._ctl is not None:
            os.close(self._ctl)
            self._ctl = None


async def open_writer(path: Path, wait: float, who: str, *, follow: bool = False) -> int:
    """A non-blocking write end of the FIFO ``path``, once a reader has it open (ENXIO until then).

    ``follow``: ``path`` is a ``/proc/self/fd`` link to the FIFO itself (see ``FifoChild.start``).
    """
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.ENOENT) or time.monotonic() > deadline:
                raise ChildGone(
                    f"{who} did not open {path} within {wait:g} s ({exc.strerror}); "
                    "is the pod's server container running? (see its log)"
                ) from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


class FifoChild(Child):
    """One session's server process, started by the spawner in the server container and joined by FIFOs."""

    def __init__(self, spawner: FifoSpawner, *, route_responses: bool = True) -> None:
        super().__init__(["(the server container's command)"], route_responses=route_responses)
        self._spawner = spawner
        self._sid = secrets.token_hex(12)
        self._started = False

    async def start(self) -> None:
        """Make the FIFOs, ask the spawner to start the program on them, join them (raise ChildGone when it cannot)."""
        loop = asyncio.get_running_loop()
        stdin_path, stdout_path = self._spawner.paths(self._sid)
        out_fd = in_fd = -1
        pins: list[int] = []
        try:
            for path in (stdin_path, stdout_path):
                os.mkfifo(path, 0o600)
                os.chmod(path, 0o666)  # the server container may run as another user
                # Pinned at once: from here on the bridge opens this very FIFO through /proc, never the
                # name again, so a neighbour that swaps the name gets nothing from the bridge.
                pins.append(os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC))
                if not stat.S_ISFIFO(os.fstat(pins[-1]).st_mode):
                    raise OSError(errno.EEXIST, f"{path} is not the FIFO the bridge made")
            stdin_pin, stdout_pin = (Path(f"/proc/self/fd/{fd}") for fd in pins)
            # Reading end first, non-blocking: the spawner's open of it for writing then never waits.
            out_fd = os.open(stdout_pin, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            await self._spawner.control("start", self._sid)
            self._started = True
            in_fd = await open_writer(stdin_pin, self._spawner.start_timeout, "the stdio server", follow=True)
        except (OSError, ChildGone) as exc:
            for fd in (out_fd, in_fd):
                if fd >= 0:
                    os.close(fd)
            self.exited.set()
            if self._started:
                with contextlib.suppress(ChildGone):
                    await self._spawner.control("kill", self._sid)
            raise exc if isinstance(exc, ChildGone) else ChildGone(f"cannot start a session: {exc}") from None
        finally:
            # Both ends are open (or never will be): the names are no longer needed.
            for fd in pins:
                os.close(fd)
            for path in (stdin_path, stdout_path):
                with contextlib.suppress(OSError):
                    path.unlink()
        stdout = asyncio.StreamReader(limit=MAX_LINE)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), os.fdopen(out_fd, "rb", 0))
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(in_fd, "wb", 0))
        stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        self._connected(f"session {self._sid[:8]}", stdin, stdout)

    async def _exit_status(self) -> str:
        return ""  # the spawner knows the exit code; its stdout's EOF is all the bridge sees

    async def close(self) -> None:
        """Close stdin, wait, SIGTERM the group, wait, SIGKILL the group (through the spawner)."""
        if not self._started or self._reader is None:
            return
        if self._stdin is not None:
            with contextlib.suppress(Exception):
                self._stdin.close()
        for verb, grace in (("", STDIN_GRACE), ("term", TERM_GRACE)):
            if verb:
                with contextlib.suppress(ChildGone):
                    await self._spawner.control(verb, self._sid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.exited.wait(), timeout=grace)
                break
        # Always: grandchildren left in its group die too, and the spawner forgets the id.
        with contextlib.suppress(ChildGone):
            await self._spawner.control("kill", self._sid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.exited.wait(), timeout=5.0)
        if not self.exited.is_set():
            self._reader.cancel()  # the spawner is gone: nobody can end the process from here
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
