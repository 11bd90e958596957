"""Operating-system helpers of the local runtime: spawning children that cannot outlive the
gateway, probing them, finding leftovers of a killed gateway, reading log tails.

Linux only (``prctl``, ``/proc``), like the local runtime itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import BinaryIO

OWNER_ENV = "MCP_GATEWAY_RUNTIME_OWNER"
"""Set in every replica's environment to a hash of the data dir: proves a process is ours.

The gateway reads it from ``/proc/<pid>/environ``; when replicas run as another user that needs
root, which is exactly when they do (see _local_isolation); the sandbox passes it through."""

BASE_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "VIRTUAL_ENV", "PYTHONPATH")
"""The only variables replicas inherit from the gateway: never MCPGW_* settings or secrets."""


def owner_marker(data_dir: Path) -> str:
    """The value of OWNER_ENV for runtimes of this data dir (a hash: paths are not the replica's business)."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:32]


def base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The minimal environment every replica starts from."""
    env = {name: environ[name] for name in BASE_ENV_NAMES if environ.get(name)}
    env.setdefault("PATH", os.defpath)
    return env


_claimed: set[int] = set()


def claim_port() -> int:
    """A loopback port nobody listens on right now and no other replica of this process was given.

    The child binds it a moment later, so another program can still take it first: the readiness
    check asks ``listener_owned`` before a replica counts as ready. ``release_port`` gives it back.
    """
    for _ in range(64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _claimed:
            _claimed.add(port)
            return port
    raise OSError("no free loopback port found in 64 tries")


def release_port(port: int) -> None:
    """The replica that was given ``port`` has exited."""
    _claimed.discard(port)


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP ``port`` (any local address, IPv4 and IPv6), from /proc/net."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _process_tree(root: int) -> set[int]:
    """``root`` and every process descended from it (by parent pid, read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ")"
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, ()))
    return tree


def listener_owned(port: int, root: int) -> bool | None:
    """Whether the socket listening on ``port`` belongs to process ``root`` or one of its descendants.

    None when that cannot be told (no listener seen, or /proc/<pid>/fd unreadable: another user's
    processes on a system that hides them). The readiness probe uses it so that a replica whose
    port another program took first never becomes an endpoint for that program (issue 17).
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    unreadable = False
    for pid in _process_tree(root):
        try:
            fds = os.scandir(f"/proc/{pid}/fd")
        except OSError:
            unreadable = True
            continue
        with fds:
            for fd in fds:
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in wanted:
                        return True
    return None if unreadable else False


READY_CLIENT_ERRORS = (b"400", b"405", b"406")
"""Answers to a plain GET that still mean "an MCP endpoint is here": Streamable-HTTP servers answer a GET
of ``/mcp`` without a session with 400 (server-everything 2026.8.31, the TypeScript and Python SDKs), 405
when they offer no GET stream, or 406 without ``Accept: text/event-stream`` (issue 17)."""


async def probe(port: int, path: str | None, limit: float) -> bool:
    """True when 127.0.0.1:port accepts a connection and, with ``path``, answers GET path with 2xx/3xx
    (or one of READY_CLIENT_ERRORS)."""
    ok, _ = await probe_detail(port, path, limit)
    return ok


async def probe_detail(port: int, path: str | None, limit: float) -> tuple[bool, str]:
    """``probe`` with what it saw: "HTTP 404 from GET /healthz", "connection refused", "timed out after 2s"."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if path is None:
                return True, "TCP connect succeeded"
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
                "User-Agent: mcp-gateway-probe\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split()
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
                return False, f"GET {path} got no HTTP answer ({status_line[:60]!r})"
            ok = parts[1][:1] in (b"2", b"3") or parts[1] in READY_CLIENT_ERRORS
            return ok, f"HTTP {parts[1].decode(errors='replace')} from GET {path}"
    except TimeoutError:
        return False, f"no answer within {limit:g}s"
    except ConnectionRefusedError:
        return False, f"connection to port {port} refused (nothing listens yet)"
    except (OSError, ValueError) as exc:
        return False, f"probe failed: {exc}"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _process_group(pid: int) -> int | None:
    """The process group of a live (not zombie) process, from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None
    return int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid`` (a scan of /proc: a few ms)."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _process_group(int(entry.name)) == pgid:
            members.append(int(entry.name))
    return members


async def wait_group_gone(pgid: int, limit: float = 2.0) -> bool:
    """Wait until no live process is left in group ``pgid`` (after its SIGKILL); False after ``limit``.

    A sandboxed replica's program is not the process the gateway started (that is bwrap): the
    leader can be reaped while the program, SIGKILLed a moment ago, is still exiting and holding
    its port. Stopping means gone, so the runtime waits for the whole group.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while group_members(pgid):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _carries_marker(pid: int, marker: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{OWNER_ENV}={marker}".encode() in environ.split(b"\0")


def find_owned_processes(marker: str) -> list[int]:
    """Live processes (not this one) whose environment carries our owner marker.

    The marker is what proves ownership: a pid recorded by a gateway that was killed may have
    been reused since by an unrelated process, and replicas' own children may have left the
    replica's process group, but both keep the environment they were started with.
    """
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != me and _carries_marker(int(entry.name), marker):
            found.append(int(entry.name))
    return found


def kill_owned_processes(marker: str) -> list[int]:
    """SIGKILL every process carrying our marker (leftovers of a killed gateway); return their pids."""
    killed = []
    for pid in find_owned_processes(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def tail_lines(path: Path, count: int, *, block: int = 64 * 1024) -> str:
    """The last ``count`` lines of a text file, reading backwards from its end."""
    if count <= 0:
        return ""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            return _tail_of(f, f.tell(), count, block=block)
    except FileNotFoundError:
        return ""


def _tail_of(f: BinaryIO, end: int, count: int, *, block: int = 64 * 1024) -> str:
    """The last ``count`` lines of ``f`` before offset ``end``."""
    data = b""
    pos = end
    while pos > 0 and data.count(b"\n") <= count:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
    lines = data.splitlines(keepends=True)[-count:]
    return b"".join(lines).decode("utf-8", errors="replace")


FOLLOW_POLL = 0.25
"""Seconds between looks at a followed log file when it has nothing new."""
FOLLOW_MAX_LINE = 64 * 1024
"""Bytes after which a line without a newline is sent as it is (a runaway line must not grow forever)."""


async def follow_lines(
    path: Path, tail: int, *, alive: Callable[[], bool], poll: float = FOLLOW_POLL
) -> AsyncIterator[str]:
    """The last ``tail`` lines of ``path``, then every line appended to it, until ``alive()`` is false.

    2026-11-30: polling, not inotify: one ``read`` and one ``stat`` per follower every 250 ms costs
    nothing measurable, needs no dependency and works the same on every file system. Rotation (the
    replica moves ``<name>.log`` to ``.log.1`` when it restarts with a large file) is noticed by the
    inode changing: the old file is read to its end, then the new one from its start. A file cut
    shorter in place is read again from its start. A file that does not exist yet (the replica has
    not started) is waited for. Reads are of a local file, small and bounded, so they run on the loop.
    """
    f = None
    inode = -1
    buffer = b""
    try:
        with contextlib.suppress(FileNotFoundError):
            f = path.open("rb")
            inode = os.fstat(f.fileno()).st_ino
            f.seek(0, os.SEEK_END)
            end = f.tell()
            # The tail up to ``end`` exactly: what is written after it comes from the loop below.
            text = _tail_of(f, end, tail) if tail > 0 else ""
            f.seek(end)
            *complete, partial = text.split("\n")
            buffer = partial.encode()  # a line the replica is still writing: the loop completes it
            for text_line in complete:
                yield text_line.rstrip("\r")
        while True:
            chunk = f.read(FOLLOW_MAX_LINE) if f is not None else b""
            if chunk:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                if len(buffer) >= FOLLOW_MAX_LINE:
                    lines.append(buffer)
                    buffer = b""
                for line in lines:
                    yield line.rstrip(b"\r").decode("utf-8", errors="replace")
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is not None and (f is None or st.st_ino != inode or st.st_size < f.tell()):
                if f is not None and st.st_ino == inode:
                    f.seek(0)  # truncated in place
                else:
                    if f is not None:
                        f.close()
                    f = path.open("rb")
                    inode = os.fstat(f.fileno()).st_ino
                continue
            if not alive():
                if buffer:
                    yield buffer.decode("utf-8", errors="replace")
                return
            await asyncio.sleep(poll)
    finally:
        if f is not None:
            f.close()
